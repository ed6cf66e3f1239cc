"""Continuous batching (`decode_stream`): the pool stays full, and a sentence decoded in a stream, next to
sentences at other steps and padded to their source length, gets exactly what it gets alone."""

import pytest
import torch

from s2s_attn.data.batching import inference_batches, make_batch
from s2s_attn.data.tokenizer import EOS_ID
from s2s_attn.decoding.beam import SearchSettings, beam_search, beam_search_stream
from s2s_attn.decoding.greedy import greedy_decode, greedy_stream
from s2s_attn.decoding.step import StateRoom, cat_states, hold_tables, reorder_state, shared_tables
from s2s_attn.decoding.stream import Compaction, decode_stream, refill_threshold
from s2s_attn.fast.step import BahdanauTables, bahdanau_tables

# lengths from 2 to 9 pieces, so the pool's sentences have different source lengths and output limits
SOURCES = [[5 + (7 * i + j) % 24 for j in range(2 + i % 8)] for i in range(13)]
# lengths from 2 to 38: newcomers longer than the pool's buffers have room for (SOURCE_ROOM) make it widen them
GROWING = [[5 + (3 * i + j) % 24 for j in range(2 + 3 * i)] for i in range(13)]


@pytest.fixture
def model(any_tiny_model):
    with torch.no_grad():
        output = any_tiny_model.decoder.output
        output.weight.mul_(15.0)
        output.bias[EOS_ID] += 0.5  # outputs of different lengths: sentences finish at different steps
    return any_tiny_model


def batches(sources: list[list[int]], batch_size: int):
    for indices in inference_batches(sources, batch_size):
        batch = make_batch([sources[i] for i in indices], None, indices)
        yield batch.src, batch.src_len, indices


def alone(source: list[int]):
    batch = make_batch([source], None, [0])
    return batch.src, batch.src_len


@pytest.mark.parametrize("sources", [SOURCES, GROWING], ids=["mixed", "growing"])
def test_a_greedy_stream_gives_each_sentence_what_it_gets_alone(model, sources):
    streamed = dict(greedy_stream(model, batches(sources, 4), capacity=4, return_attention=True))
    assert sorted(streamed) == list(range(len(sources)))
    for i, source in enumerate(sources):
        ids, attention = greedy_decode(model, *alone(source), return_attention=True)
        assert streamed[i][0] == ids[0]
        assert torch.allclose(streamed[i][1], attention[0], atol=1e-6)


@pytest.mark.parametrize("batch_size,capacity", [(4, 4), (5, 3)])  # batches larger than the pool: they are split
@pytest.mark.parametrize("sources", [SOURCES, GROWING], ids=["mixed", "growing"])
def test_a_beam_stream_gives_each_sentence_what_it_gets_alone(model, sources, batch_size, capacity):
    search = SearchSettings(beam_size=3, nbest=2)
    streamed = dict(beam_search_stream(model, batches(sources, batch_size), capacity, search, return_attention=True))
    assert sorted(streamed) == list(range(len(sources)))
    for i, source in enumerate(sources):
        expected = beam_search(model, *alone(source), beam_size=3, nbest=2, return_attention=True)[0]
        assert [h.tokens for h in streamed[i]] == [h.tokens for h in expected]
        # float32 sums over the steps, grouped by the batch's products: a score of -220 has an ulp of 1.5e-5
        assert [h.score for h in streamed[i]] == pytest.approx([h.score for h in expected], rel=1e-6, abs=1e-5)
        for got, want in zip(streamed[i], expected):
            assert torch.allclose(got.attention, want.attention, atol=1e-6)


def test_a_beam_stream_of_beam_size_one_gives_greedy_decoding(model):
    search = SearchSettings(beam_size=1)
    streamed = dict(beam_search_stream(model, batches(SOURCES, 4), 4, search))  # newcomers join a running pool
    assert sorted(streamed) == list(range(len(SOURCES)))
    for i, source in enumerate(SOURCES):
        assert streamed[i][0].tokens == greedy_decode(model, *alone(source))[0][0]


def test_the_state_room_gathers_like_reorder_state_and_appends_like_cat_states():
    """A beam pool's state lives in buffers with room: the live rows are gathered into them, and a merge appends the
    newcomers' rows after them in place; a state that is not the buffers' first rows is concatenated as before."""
    torch.manual_seed(0)
    hidden, extra = torch.randn(1, 6, 4), torch.randn(6, 7)[:, 2:]  # extra: a row-strided view, as the fused step's
    rows = torch.tensor([5, 0, 2])
    room = StateRoom()
    carried = room.carry((hidden, extra), rows)
    for got, want in zip(carried, reorder_state((hidden, extra), rows)):
        assert torch.equal(got, want)
    before = tuple(t.clone() for t in carried)
    newcomers = (torch.randn(1, 2, 4), torch.randn(2, 5))
    joined = room.join(carried, newcomers)
    for got, want in zip(joined, cat_states(before, newcomers)):
        assert torch.equal(got, want)
    assert joined[0].data_ptr() == carried[0].data_ptr() and joined[1].data_ptr() == carried[1].data_ptr()  # appended

    later = (joined[0][:, 1:], joined[1][1:])  # e.g. a run of sentences kept by a compaction: not the first rows
    for got, want in zip(room.join(later, newcomers), cat_states(later, newcomers)):
        assert torch.equal(got, want)
    full = room.carry((torch.randn(1, 6, 4), torch.randn(6, 5)), torch.arange(6))  # the room holds 6 rows
    assert room.join(full, newcomers)[0].data_ptr() != full[0].data_ptr()  # no room left: concatenated
    layers = torch.randn(2, 6, 4)  # several layers: reordered as they are
    assert torch.equal(StateRoom().carry((layers, None), rows)[0], layers[:, rows])


def test_a_compaction_moves_the_kept_sentences_beyond_the_new_size_into_the_holes():
    rows = torch.arange(12).view(6, 2)  # 6 sentences, 2 rows each -> (12,) would be width 2
    compaction = Compaction([0, 2, 4, 5], 6)  # holes at 1 and 3 take sentences 4 and 5
    assert compaction.order == [0, 4, 2, 5]
    assert compaction.reorder(list("abcdef")) == ["a", "e", "c", "f"]
    kept = compaction.apply(rows.clone())
    assert kept.tolist() == [[0, 1], [8, 9], [4, 5], [10, 11]]
    assert compaction.select(rows).tolist() == kept.tolist()  # the same rows, without touching the input
    flat = torch.arange(12)
    assert compaction.apply(flat.clone(), width=2).tolist() == kept.view(-1).tolist()
    twice = rows.clone()
    compaction.apply(twice)
    assert compaction.apply(twice).tolist() == kept.tolist()  # a second pass over one storage changes nothing
    hidden = torch.arange(12).view(1, 6, 2)
    assert compaction.apply(hidden.clone(), dim=1)[0].tolist() == kept.tolist()


def test_a_run_of_kept_sentences_is_a_view_and_keeping_all_is_a_no_op():
    rows = torch.arange(12).view(6, 2)
    run = Compaction([2, 3, 4], 6).apply(rows)
    assert run.data_ptr() == rows[2].data_ptr() and run.tolist() == rows[2:5].tolist()
    assert Compaction([0, 1, 2, 3, 4, 5], 6).keeps_all
    assert Compaction([0, 1, 2, 3, 4, 5], 6).apply(rows) is rows
    assert Compaction([], 6).apply(rows).shape == (0, 2)


class CountingGroup:
    """A stand-in group: sentence i needs ``needs[i]`` steps; records the pool sizes it runs at."""

    def __init__(self, indices: list[int], needs: dict[int, int], log: list[int]) -> None:
        self.indices, self.needs, self.log = list(indices), needs, log
        self.steps = {i: 0 for i in indices}

    def __len__(self) -> int:
        return len(self.indices)

    def prepare(self):
        return []

    def take(self, count: int):
        first = CountingGroup(self.indices[:count], self.needs, self.log)
        self.indices = self.indices[count:]
        return first

    def merge(self, other):
        self.indices += other.indices
        self.steps.update(other.steps)
        return self

    def advance(self):
        self.log.append(len(self.indices))
        for i in self.indices:
            self.steps[i] += 1
        done = [i for i in self.indices if self.steps[i] >= self.needs[i]]
        self.indices = [i for i in self.indices if i not in done]
        return [(i, self.steps[i]) for i in done]


def test_the_pool_is_refilled_as_sentences_finish_and_never_exceeds_its_capacity():
    needs = {i: 1 + (i * 7) % 11 for i in range(100)}  # 1 to 11 steps
    stream_batches = [(None, None, list(range(start, min(start + 16, 100)))) for start in range(0, 100, 16)]
    log: list[int] = []
    results = dict(decode_stream(stream_batches, lambda src, src_len, indices: CountingGroup(indices, needs, log), 16))
    assert results == needs  # every sentence once, after the steps it needed
    assert max(log) == 16
    threshold = refill_threshold(16)
    # while sentences are waiting, the pool runs with fewer than capacity - threshold + 1 only never
    assert min(log[: len(log) // 2]) > 16 - threshold
    # batch at a time would need the longest sentence's steps for every batch of 16
    assert len(log) < sum(max(needs[i] for i in indices) for _, _, indices in stream_batches)


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        list(decode_stream([], lambda *batch: None, 0))


def test_a_frozen_models_tables_are_kept_across_calls(tiny_model):
    with torch.inference_mode():
        with shared_tables(tiny_model):
            first = bahdanau_tables(tiny_model.decoder)
        with shared_tables(tiny_model):
            assert bahdanau_tables(tiny_model.decoder) is not first  # weights may have changed in between
        hold_tables(tiny_model)
        with shared_tables(tiny_model):
            held = bahdanau_tables(tiny_model.decoder)
        with shared_tables(tiny_model):
            assert bahdanau_tables(tiny_model.decoder) is held
        assert isinstance(held, BahdanauTables)
