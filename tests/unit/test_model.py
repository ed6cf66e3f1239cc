"""The model: shapes, the fast GRU step, batched vs one-at-a-time decoding, for every decoder style
(luong with and without input feeding) and every attention (the ``any_tiny_model`` fixture)."""

import pytest
import torch

from s2s_attn.data.batching import make_batch
from s2s_attn.decoding.greedy import greedy_decode
from s2s_attn.model.decoder import GRUCellStack
from s2s_attn.model.seq2seq import ModelConfig, Seq2Seq


def test_split_gru_cell_equals_torch_grucell():
    torch.manual_seed(0)
    stack = GRUCellStack(emb_size=6, ctx_size=5, hidden_size=7, num_layers=1, dropout=0.0)
    emb, ctx, h = torch.randn(4, 6), torch.randn(4, 5), torch.randn(1, 4, 7)
    ours = stack(stack.embed_gates(emb), ctx, h)[0]
    reference = stack.cells[0](torch.cat([emb, ctx], dim=-1), h[0])
    torch.testing.assert_close(ours, reference)


def test_forward_shapes(any_tiny_model):
    batch = make_batch([[5, 6, 7], [8, 9]], [[4, 5, 6, 7], [9]], [0, 1])
    logits, attention = any_tiny_model(batch.src, batch.src_len, batch.tgt_in)
    assert logits.shape == (2, 5, 25)  # (batch, tgt_len incl. BOS, vocab)
    assert attention.shape == (2, 5, 4)  # (batch, tgt_len, src_len incl. EOS)
    assert torch.all(attention[1, :, 3:] == 0)  # padding of the shorter source
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 5))


def test_step_by_step_decoding_matches_teacher_forced_forward(any_tiny_model):
    model = any_tiny_model
    batch = make_batch([[5, 6, 7], [8, 9]], [[4, 5, 6, 7], [9, 10, 11, 12]], [0, 1])
    logits, attention = model(batch.src, batch.src_len, batch.tgt_in)
    values, final, keys_proj, mask = model.encode(batch.src, batch.src_len)
    state = model.decoder.init_state(final)
    for t in range(batch.tgt_in.size(1)):
        log_probs, state, weights = model.decoder.step(batch.tgt_in[:, t], state, keys_proj, values, mask)
        torch.testing.assert_close(log_probs, torch.log_softmax(logits[:, t], -1), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(weights, attention[:, t], rtol=1e-4, atol=1e-5)


def test_batched_greedy_decoding_equals_one_sentence_at_a_time(any_tiny_model):
    sources = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    batch = make_batch(sources, None, [0, 1, 2])
    batched, _ = greedy_decode(any_tiny_model, batch.src, batch.src_len, max_len=12)
    for i, source in enumerate(sources):
        single = make_batch([source], None, [0])
        alone, _ = greedy_decode(any_tiny_model, single.src, single.src_len, max_len=12)
        assert alone[0] == batched[i]


def test_greedy_returns_attention_over_the_real_source_only(any_tiny_model):
    batch = make_batch([[5, 6, 7, 8], [9]], None, [0, 1])
    hyps, attentions = greedy_decode(any_tiny_model, batch.src, batch.src_len, max_len=6, return_attention=True)
    assert attentions[1].shape[1] == 2  # one piece + EOS
    torch.testing.assert_close(attentions[1].sum(-1), torch.ones(attentions[1].size(0)))


def test_unknown_decoder_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid names: .*bahdanau.*luong"):
        Seq2Seq(ModelConfig(src_vocab_size=10, tgt_vocab_size=10, decoder="nope"))


@pytest.mark.parametrize("decoder", ["bahdanau", "luong"])
def test_tied_embeddings_share_one_matrix(decoder):
    model = Seq2Seq(ModelConfig(src_vocab_size=10, tgt_vocab_size=12, emb_size=8, output_size=8,
                                tie_embeddings=True, decoder=decoder))
    assert model.decoder.output.weight is model.decoder.embedding.weight


@pytest.mark.parametrize("decoder", ["bahdanau", "luong"])
def test_tied_embeddings_need_output_size_equal_to_emb_size(decoder):
    with pytest.raises(ValueError, match="output_size == model.emb_size"):
        Seq2Seq(ModelConfig(src_vocab_size=10, tgt_vocab_size=12, emb_size=8, output_size=6,
                            tie_embeddings=True, decoder=decoder))


def test_an_old_checkpoint_config_without_the_new_fields_still_builds():
    old = dict(src_vocab_size=10, tgt_vocab_size=12, emb_size=8, encoder_hidden=4, decoder_hidden=6,
               output_size=8, attention_size=4)  # no input_feeding / attention_heads
    config = ModelConfig(**old)
    assert (config.input_feeding, config.attention_heads) == (True, 1)
    Seq2Seq(config)


def test_uniform_init_stays_within_its_range_and_keeps_padding_rows_zero(make_tiny_model):
    model = make_tiny_model(init="uniform", init_range=0.05)
    for name, param in model.named_parameters():
        assert param.abs().max() <= 0.05, name
    assert model.encoder.embedding.weight[0].abs().sum() == 0 and model.decoder.embedding.weight[0].abs().sum() == 0


def test_xavier_init_gives_glorot_matrices_and_zero_biases(make_tiny_model):
    model = make_tiny_model(init="xavier")
    for name, param in model.named_parameters():
        if param.dim() == 1:
            assert param.abs().sum() == 0, name
    weight = model.decoder.attention.key_layer.weight  # (attn 10, keys 24): bound sqrt(6 / (10 + 24)) = 0.42
    assert 0.1 < weight.abs().max() <= (6 / sum(weight.shape)) ** 0.5
    assert model.decoder.embedding.weight[0].abs().sum() == 0


def test_unknown_init_lists_the_valid_ones(make_tiny_model):
    with pytest.raises(ValueError, match="valid: uniform, xavier"):
        make_tiny_model(init="orthogonal")
