"""The explorer's page: one document with its style and script inline, and an exported page's data embedded so
that no text in it (a sentence with ``</script>`` in it) can end the script element early."""

import json
import re

from s2s_attn.explore.page import page_html


def test_the_served_page_has_no_data_and_nothing_from_the_network():
    html = page_html()
    assert "<script>window.S2S_EXPORT = null;</script>" in html
    assert "/*STYLE*/" not in html and "/*SCRIPT*/" not in html and "/*DATA*/" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)


def test_embedded_data_survives_text_that_looks_like_markup():
    tricky = "a </script><script>alert(1)</script> /*SCRIPT*/ /*DATA*/null \u00e9\u6c49"
    html = page_html({"info": {"sentences": [tricky]}})
    assert html.count("</script>") == 2  # the data's own script element and the page's script
    embedded = re.search(r"window\.S2S_EXPORT = (.*?);</script>", html, re.S).group(1)
    assert json.loads(embedded.replace("<\\/", "</")) == {"info": {"sentences": [tricky]}}
