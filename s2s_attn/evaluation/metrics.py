"""Corpus BLEU and chrF with sacrebleu, on detokenised text, with the tokenizer that fits the language."""

from __future__ import annotations

from dataclasses import dataclass

import sacrebleu

from ..data.chinese import is_chinese


def bleu_tokenizer_for(lang: str) -> str:
    """sacrebleu's tokenizer for a target language: ``zh`` for Chinese, ``13a`` otherwise."""
    return "zh" if is_chinese(lang) else "13a"


@dataclass
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str

    def __str__(self) -> str:
        return f"BLEU {self.bleu:.2f} chrF {self.chrf:.2f} ({self.bleu_signature})"


def score(hypotheses: list[str], references: list[str], tgt_lang: str = "en") -> Scores:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    bleu = sacrebleu.metrics.BLEU(tokenize=bleu_tokenizer_for(tgt_lang))
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return Scores(b.score, c.score, str(bleu.get_signature()), str(chrf.get_signature()))
