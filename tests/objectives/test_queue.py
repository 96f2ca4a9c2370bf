"""objectives/queue.py: the size rule, and the FIFO against a deque written here — wrap-around, a batch longer than
the queue, micro-batches of one step committed together in order, a skipped step's stash dropped, and two
processes (all_gather stood in for) holding what one holds."""
from collections import deque

import pytest
import torch

import multissl.objectives.queue as queue_module
from multissl.errors import UserError
from multissl.objectives.queue import Queue, queue_size


def oldest_first(q: Queue):
    """The queue's rows and labels from the oldest to the newest: the slot at ptr is overwritten next."""
    order = [(int(q.ptr) + k) % len(q) for k in range(len(q))]
    return q.rows[order], q.labels[order]


def reference(q: Queue):
    """A deque of (row, label), oldest first, seeded with the queue's current content."""
    rows, labels = oldest_first(q)
    return deque(zip(rows.clone(), labels.tolist()), maxlen=len(q))


def assert_matches(q: Queue, ref: deque):
    rows, labels = oldest_first(q)
    assert labels.tolist() == [y for _, y in ref]
    assert torch.equal(rows, torch.stack([r for r, _ in ref]))


def batch(n, dim=3, start=0):
    rows = torch.arange(start, start + n, dtype=torch.float32)[:, None] + torch.zeros(n, dim)  # row k = k
    return rows, torch.arange(start, start + n)


def test_queue_size_rule():
    assert queue_size(None, 100) == 50
    assert queue_size(None, 10**6) == 65536 and queue_size(None, 10**6, default=98304) == 98304
    assert queue_size(None, 3) == 1
    assert queue_size(99, 100) == 99


@pytest.mark.parametrize("size", [0, 100, 250])
def test_queue_size_refused_in_one_line_naming_both_sizes(size):
    with pytest.raises(UserError) as e:
        queue_size(size, 100, key="objective.bank")
    msg = str(e.value)
    assert "\n" not in msg and f"objective.bank={size}" in msg and "100 samples" in msg


def test_starts_with_random_unit_rows_and_unknown_labels():
    q = Queue(7, 4)
    torch.testing.assert_close(q.rows.norm(dim=1), torch.ones(7))
    assert (q.labels == -1).all() and int(q.ptr) == 0 and int(q.filled) == 0
    assert set(q.state_dict()) == {"rows", "labels", "ptr", "filled"}  # checkpointed; the stash is not


def test_wraps_around():
    q = Queue(5, 3)
    ref = reference(q)
    for step, n in enumerate([3, 4, 2]):
        rows, labels = batch(n, start=10 * step)
        q.stash(step, rows, labels)
        q.commit(step)
        ref.extend(zip(rows, labels.tolist()))
        assert_matches(q, ref)
    assert int(q.ptr) == (3 + 4 + 2) % 5 and int(q.filled) == 5
    # slots: 0-2 <- 0 1 2; 3 4 0 1 <- 10-13; 2 3 <- 20 21
    assert q.labels.tolist() == [12, 13, 20, 21, 11]


def test_a_batch_longer_than_the_queue_keeps_its_last_rows():
    q = Queue(4, 3)
    q.stash(0, *batch(1))
    q.commit(0)
    ref = reference(q)
    rows, labels = batch(6, start=100)
    q.stash(1, rows, labels)
    q.commit(1)
    ref.extend(zip(rows, labels.tolist()))
    assert_matches(q, ref)
    assert sorted(q.labels.tolist()) == [102, 103, 104, 105] and int(q.filled) == 4


def test_micro_batches_of_one_step_commit_together_in_order_and_stale_stashes_drop():
    q = Queue(10, 3)
    ref = reference(q)
    q.stash(3, *batch(2, start=0))  # a skipped step's stash, never committed
    a, b = batch(2, start=10), batch(3, start=20)
    q.stash(4, *a)
    q.stash(4, *b)
    q.commit(4)
    ref.extend(zip(torch.cat([a[0], b[0]]), [10, 11, 20, 21, 22]))
    assert_matches(q, ref)
    assert q.pending == [] and int(q.filled) == 5
    q.commit(5)  # nothing stashed for this step: unchanged
    assert_matches(q, ref)


def test_unlabelled_rows_and_other_dtypes():
    q = Queue(4, 2)
    q.stash(0, torch.ones(2, 2, dtype=torch.float64))
    q.commit(0)
    assert q.rows.dtype == torch.float32 and q.labels[:2].tolist() == [-1, -1]
    assert torch.equal(q.rows[:2], torch.ones(2, 2))


def test_two_processes_hold_what_one_holds(monkeypatch):
    """Global batch of 8 in 2 micro-batches over 2 processes (StepSampler: micro-batch i = rows [4i, 4i+4), rank r
    its half): each rank's commit, with all_gather returning every rank's part in rank order, gives the queue
    that one process committing the whole batch gives."""
    rows, labels = batch(8, start=40)
    one = Queue(6, 3)
    state = {k: v.clone() for k, v in one.state_dict().items()}
    one.stash(0, rows, labels)
    one.commit(0)

    parts = {}  # data_ptr of a rank's slice -> the whole micro-batch in rank order
    for i in range(2):
        for t in (rows, labels):
            whole = t[4 * i:4 * i + 4]
            for r in range(2):
                parts[whole[2 * r:2 * r + 2].data_ptr()] = whole
    monkeypatch.setattr(queue_module, "all_gather", lambda x: parts[x.data_ptr()].clone())
    for rank in range(2):
        q = Queue(6, 3)
        q.load_state_dict(state)
        for i in range(2):
            lo = 4 * i + 2 * rank
            q.stash(0, rows[lo:lo + 2], labels[lo:lo + 2])
        q.commit(0)
        for k, v in one.state_dict().items():
            assert torch.equal(q.state_dict()[k], v), (rank, k)
