"""Sequential models' data and attacks, checked against independent constructions: RecBole's data
augmentation (``training_instances``), the every-position windows and their loss (against
RecBole's own ``calculate_loss``), the histories a model scores from, sequence noise, profile
pollution and the order of fake sequences (``benchmark.core.sequences``, ``attacks.sequence_noise``,
``attacks.pollution``, ``attacks.fake_sequences``)."""
from collections import Counter

import numpy as np
import pytest
import torch

from attacks.base import AttackContext, get_attack
from attacks.sequential import target_log_prob
from benchmark.core.data import Interactions
from benchmark.core.sequences import (
    every_position_loss,
    histories,
    training_data,
    training_instances,
    training_windows,
    trains_every_position,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TARGETS = np.array([3, 17])   # item ids (ours) promoted by the attacks below


# -- independent references ---------------------------------------------------------------------
def plain_sequences(inter: Interactions, n_users: int | None = None) -> list[list[int]]:
    """Each user's items sorted by (timestamp, item id), in plain Python (NaN times last)."""
    rows: dict[int, list] = {}
    for u, i, t in zip(inter.users.tolist(), inter.items.tolist(), inter.timestamps.tolist()):
        rows.setdefault(u, []).append((np.isnan(t), 0.0 if np.isnan(t) else t, i))
    n = inter.n_users if n_users is None else n_users
    return [[i for *_, i in sorted(rows.get(u, []))] for u in range(n)]


def recbole_augmentation(sequences, max_len, item_ids, user_ids):
    """RecBole's ``data_augmentation``, in plain Python: for each user's items i_1..i_n and
    j = 2..n, the latest ``max_len`` items before i_j (left-aligned, zero-padded) and i_j."""
    out = []
    for u, seq in enumerate(sequences):
        for j in range(1, len(seq)):
            before = [int(item_ids[i]) for i in seq[max(0, j - max_len):j]]
            out.append((int(user_ids[u]), tuple(before + [0] * (max_len - len(before))), len(before),
                        int(item_ids[seq[j]])))
    return out


def as_rows(seqs) -> list[tuple]:
    return [(int(u), tuple(row.tolist()), int(n), int(t)) for u, row, n, t in
            zip(seqs.users, seqs.items, seqs.lengths, seqs.targets)]


def time_ordered(inter: Interactions, user: int) -> list[tuple]:
    """(item, timestamp, rating) of one user's rows in time order (ties by item id)."""
    mask = inter.users == user
    rows = sorted(zip(inter.timestamps[mask].tolist(), inter.items[mask].tolist(), inter.ratings[mask].tolist()))
    return [(i, t, r) for t, i, r in rows]


def rows_of(inter: Interactions) -> Counter:
    """(user, item, rating) rows: sequence noise may retime rows (ties separated, order kept)."""
    return Counter(zip(inter.users.tolist(), inter.items.tolist(), inter.ratings.tolist()))


def synthetic(max_len: int) -> Interactions:
    """Users with 1 item, none, exactly L + 1 items, 2L + 3 items, and tied times; rows shuffled."""
    rng = np.random.default_rng(5)
    users, items, times = [0], [7], [1.0]
    for user, n in ((2, max_len + 1), (3, 2 * max_len + 3)):
        chosen = rng.choice(40, n, replace=False)
        users += [user] * n
        items += chosen.tolist()
        times += rng.permutation(n).astype(float).tolist()
    users += [4, 4, 4, 4]                 # ties at t=5: items 9 < 11 < 30 in that order
    items += [30, 9, 11, 2]
    times += [5.0, 5.0, 5.0, 1.0]
    order = rng.permutation(len(users))
    return Interactions.build(np.array(users)[order], np.array(items)[order], np.ones(len(users)), 5, 40,
                              np.array(times)[order])


@pytest.fixture(scope="module")
def ids(tiny_loo_split):
    """A non-identity id map (RecBole's would be a permutation too): catches unmapped ids."""
    rng = np.random.default_rng(1)
    train = tiny_loo_split.train
    return 1 + rng.permutation(train.n_items), 1 + rng.permutation(train.n_users)


# -- 1. training_instances ------------------------------------------------------------------------
@pytest.mark.parametrize("max_len", [5, 40])
def test_training_instances_are_recbole_augmentation(tiny_loo_split, ids, max_len):
    train = tiny_loo_split.train
    item_ids, user_ids = ids
    made = training_instances(train, max_len, item_ids, user_ids)
    expected = recbole_augmentation(plain_sequences(train), max_len, item_ids, user_ids)
    assert len(made) == len(expected) == len(train) - train.n_users
    assert made.items.shape == (len(expected), max_len) and made.targets.dim() == 1
    assert sorted(as_rows(made)) == sorted(expected)
    if max_len == 5:   # truncation happened: the longest inputs are L items, not more
        assert int(made.lengths.max()) == 5 and int((made.lengths == 5).sum()) > len(made) // 2


def test_training_instances_identity_ids_ties_and_short_users():
    train = synthetic(4)
    made = training_instances(train, 4, np.arange(40), np.arange(5))
    assert sorted(as_rows(made)) == sorted(recbole_augmentation(plain_sequences(train), 4, np.arange(40),
                                                                np.arange(5)))
    users = made.users.tolist()
    assert 0 not in users and 1 not in users                  # one item, no item: no instance
    assert users.count(2) == 4 and users.count(3) == 10 and users.count(4) == 3
    tied = sorted((int(n), int(t)) for u, n, t in zip(made.users, made.lengths, made.targets) if u == 4)
    assert tied == [(1, 9), (2, 11), (3, 30)]                 # 2, then 9 < 11 < 30 (ties by item id)


# -- 2. training_windows --------------------------------------------------------------------------
@pytest.mark.parametrize("max_len", [1, 5, 40])
def test_training_windows_cover_every_target_once(tiny_loo_split, ids, max_len):
    train = tiny_loo_split.train
    item_ids, user_ids = ids
    windows = training_windows(train, max_len, item_ids, user_ids)
    assert windows.items.shape == windows.targets.shape == (len(windows), max_len)
    back = {int(r): u for u, r in enumerate(user_ids)}
    sequences = [[int(item_ids[i]) for i in seq] for seq in plain_sequences(train)]
    covered = {u: [] for u in range(train.n_users)}
    per_user = Counter()
    for user, inputs, n, targets in zip(windows.users.tolist(), windows.items.tolist(), windows.lengths.tolist(),
                                        windows.targets.tolist()):
        u = back[user]
        seq = sequences[u]
        assert 1 <= n <= max_len
        assert inputs[n:] == [0] * (max_len - n) and targets[n:] == [0] * (max_len - n)
        start = seq.index(inputs[0])                          # a user's train items are distinct
        assert inputs[:n] == seq[start:start + n]             # a contiguous stretch of the sequence
        assert targets[:n] == seq[start + 1:start + n + 1]    # each input's next item
        covered[u] += range(start + 1, start + n + 1)
        per_user[u] += 1
    for u, seq in enumerate(sequences):
        assert sorted(covered[u]) == list(range(1, len(seq)))     # every item but the first, once
        assert per_user[u] == -(-(len(seq) - 1) // max_len)
    # the multiset of targets per user is the user's train items but the first
    got = Counter()
    for user, row in zip(windows.users.tolist(), windows.targets.tolist()):
        got.update((back[user], t) for t in row if t)
    assert got == Counter((u, t) for u, seq in enumerate(sequences) for t in seq[1:])


def test_training_windows_short_and_tied_users():
    train = synthetic(4)
    windows = training_windows(train, 4, np.arange(40), np.arange(5))
    users = windows.users.tolist()
    assert users.count(0) == users.count(1) == 0 and users.count(2) == 1 and users.count(3) == 3
    seq = plain_sequences(train)
    (row,) = [i for i, u in enumerate(users) if u == 2]
    assert windows.items[row].tolist() == seq[2][:4] and windows.targets[row].tolist() == seq[2][1:]
    (row,) = [i for i, u in enumerate(users) if u == 4]
    assert windows.items[row].tolist() == [2, 9, 11, 0] and windows.targets[row].tolist() == [9, 11, 30, 0]
    # windows are cut from the end: only a user's earliest window may be short
    lengths = sorted(int(n) for u, n in zip(users, windows.lengths) if u == 3)
    assert lengths == [2, 4, 4]


# -- 3. every-position loss = RecBole's loss over the prefix instances -----------------------------
@pytest.mark.parametrize("name", ["SASRec", "GRU4Rec"])
def test_every_position_loss_equals_recbole_loss(tiny_loo_split, name):
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    max_len = 15
    split = tiny_loo_split
    built = build_model(name, split, {"MAX_ITEM_LIST_LENGTH": max_len}, seed=0)
    model = built.model
    assert trains_every_position(model)
    item_ids, user_ids = built.ids.item, built.ids.user
    windows = training_data(model, split.train, item_ids, user_ids)
    assert windows.targets.dim() == 2                               # a causal CE model trains on windows
    instances = training_instances(split.train, max_len, item_ids, user_ids)
    trainer = LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items),
                          TrainSettings(epochs=1), 0, sequences=instances)   # instances: loss not replaced
    model.eval()
    counts = split.train.user_counts()
    short = user_ids[np.flatnonzero(counts <= max_len + 1)]
    assert 0 < short.size < split.train.n_users                     # both kinds of users exist
    in_short = lambda seqs: torch.from_numpy(np.isin(seqs.users.numpy(), short)).nonzero().view(-1)
    with torch.no_grad():
        w, i = windows.take(in_short(windows)), instances.take(in_short(instances))
        assert len(w) == short.size and int((w.targets > 0).sum()) == len(i)
        ours = every_position_loss(model, trainer.sequence_batch(w))
        theirs = model.calculate_loss(trainer.sequence_batch(i))
        assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
        for user in short[:6]:                                      # user by user: sums of losses
            wu = windows.take((windows.users == int(user)).nonzero().view(-1))
            iu = instances.take((instances.users == int(user)).nonzero().view(-1))
            n = len(iu)
            per_instance = torch.stack([model.calculate_loss(trainer.sequence_batch(iu.take(torch.tensor([k]))))
                                        for k in range(n)])
            assert float(every_position_loss(model, trainer.sequence_batch(wu))) * n == \
                pytest.approx(float(per_instance.sum()), rel=1e-5)
        # a long user's windows give less context than RecBole: the losses differ there
        long_user = int(user_ids[np.argmax(counts)])
        wl = windows.take((windows.users == long_user).nonzero().view(-1))
        il = instances.take((instances.users == long_user).nonzero().view(-1))
        assert len(wl) == 2
        assert float(every_position_loss(model, trainer.sequence_batch(wl))) != \
            pytest.approx(float(model.calculate_loss(trainer.sequence_batch(il))), rel=1e-6)
    assert model.calculate_loss.__func__ is type(model).calculate_loss   # not left patched
    assert "gather_indexes" not in vars(model)


def test_bpr_sequential_model_trains_on_instances(tiny_loo_split):
    from benchmark.core.models import build_model
    built = build_model("SASRec", tiny_loo_split, {"MAX_ITEM_LIST_LENGTH": 5, "loss_type": "BPR"}, seed=0)
    assert not trains_every_position(built.model)
    data = training_data(built.model, tiny_loo_split.train, built.ids.item, built.ids.user)
    assert data.targets.dim() == 1 and len(data) == len(tiny_loo_split.train) - tiny_loo_split.train.n_users


# -- 4. histories ---------------------------------------------------------------------------------
@pytest.mark.parametrize("max_len", [5, 50])
def test_histories_are_latest_items_in_time_order(tiny_loo_split, ids, max_len):
    split = tiny_loo_split
    item_ids, user_ids = ids
    seen = split.train.concat(split.valid)
    made = histories(seen, split.n_real_users, max_len, item_ids, user_ids)
    assert len(made) == split.n_real_users and made.items.shape == (split.n_real_users, max_len)
    assert made.users.tolist() == user_ids[:split.n_real_users].tolist()
    assert (made.targets == -1).all()
    for u, seq in enumerate(plain_sequences(seen)):
        latest = [int(item_ids[i]) for i in seq[-max_len:]]
        assert int(made.lengths[u]) == len(latest) == min(len(seq), max_len)
        assert made.items[u].tolist() == latest + [0] * (max_len - len(latest))
        assert int(item_ids[seq[-1]]) == int(item_ids[split.valid.items[split.valid.users == u][0]])


def test_histories_of_users_without_rows(tiny_loo_split, ids):
    train = tiny_loo_split.train
    item_ids, user_ids = ids
    some = train.take(~np.isin(train.users, [0, 7]))
    made = histories(some, train.n_users, 5, item_ids, user_ids)
    assert made.lengths[0] == made.lengths[7] == 0 and (made.items[[0, 7]] == 0).all()
    assert (made.lengths[1:7] == 5).all()
    small = Interactions.build([0, 0, 0], [4, 2, 9], [1, 1, 1], 1, 10, [3.0, 1.0, 2.0])   # n_users grows
    made = histories(small, 3, 4, np.arange(10) + 1, np.arange(3) + 1)
    assert made.lengths.tolist() == [3, 0, 0] and made.items[0].tolist() == [3, 10, 5, 0]


# -- 5. sequence noise ----------------------------------------------------------------------------
def noise(split, seed=0, **params):
    attack = get_attack("sequence_noise", **params)
    return attack, attack.poison(AttackContext(split, TARGETS), seed=seed)


@pytest.mark.parametrize("position", ["start", "middle", "end"])
def test_noise_remove_drops_each_users_window(tiny_loo_split, position):
    split = tiny_loo_split
    train = split.train
    attack, result = noise(split, fraction=0.2, operation="remove", position=position)
    out = result.train
    removed = Counter()
    for u in range(split.n_real_users):
        before = time_ordered(train, u)
        n = attack.per_user(len(before))
        assert n == max(1, round(0.2 * len(before)))
        first = {"start": 0, "middle": (len(before) - n) // 2, "end": len(before) - n}[position]
        assert time_ordered(out, u) == before[:first] + before[first + n:]
        removed[u] = n
    assert sum((rows_of(train) - rows_of(out)).values()) == sum(removed.values())
    assert not rows_of(out) - rows_of(train)                     # nothing added, nothing changed
    assert len(train) - len(out) == sum(removed.values()) == result.injected_interactions


@pytest.mark.parametrize("position", ["start", "middle", "end"])
def test_noise_shuffle_reorders_only_the_segment(tiny_loo_split, position):
    split = tiny_loo_split
    train = split.train
    attack, result = noise(split, seed=3, fraction=0.2, operation="shuffle", position=position)
    out = result.train
    assert rows_of(train) == rows_of(out)
    for u in range(split.n_real_users):
        before = [i for i, *_ in time_ordered(train, u)]
        after = [i for i, *_ in time_ordered(out, u)]
        n = attack.per_user(len(before))
        first = {"start": 0, "middle": (len(before) - n) // 2, "end": len(before) - n}[position]
        inside = slice(first, first + n)
        assert after[:first] == before[:first] and after[first + n:] == before[first + n:]
        assert sorted(after[inside]) == sorted(before[inside]) and after[inside] != before[inside]
    # a different seed shuffles differently (the attack is seeded)
    _, other = noise(split, seed=4, fraction=0.2, operation="shuffle", position=position)
    assert not np.array_equal(other.train.timestamps, out.timestamps)


@pytest.mark.parametrize("position", ["start", "middle", "end"])
def test_noise_insert_puts_new_items_at_the_position(tiny_loo_split, position):
    split = tiny_loo_split
    train = split.train
    attack, result = noise(split, seed=2, fraction=0.2, operation="insert", position=position)
    out = result.train
    assert not rows_of(train) - rows_of(out)                     # every original row kept as it was
    added = rows_of(out) - rows_of(train)
    rated = set(train.items.tolist())
    for u in range(split.n_real_users):
        before = [i for i, *_ in time_ordered(train, u)]
        after = [i for i, *_ in time_ordered(out, u)]
        new = [(i, t, r) for i, t, r in time_ordered(out, u) if (u, i, r) in added]
        n = attack.per_user(len(before))
        assert len(new) == n and len({i for i, *_ in new}) == n
        assert all(i not in before and i in rated for i, *_ in new)
        assert all(r == train.ratings.max() for *_, r in new)
        at = {"start": 0, "middle": len(before) // 2, "end": len(before)}[position]
        assert after[:at] == before[:at] and after[at + n:] == before[at:]
        assert sorted(after[at:at + n]) == sorted(i for i, *_ in new)
        times = sorted(t for i, t, _ in time_ordered(out, u) if i in before)
        if position == "start":
            assert all(t < times[0] for _, t, _ in new)
        elif position == "end":
            assert all(t > times[-1] for _, t, _ in new)
    assert len(out) - len(train) == result.injected_interactions


def test_noise_remove_is_the_same_for_every_seed(tiny_loo_split):
    _, a = noise(tiny_loo_split, seed=0, fraction=0.1)
    _, b = noise(tiny_loo_split, seed=9, fraction=0.1)
    assert rows_of(a.train) == rows_of(b.train)


# -- 6. profile pollution -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_sasrec(tiny_loo_split):
    """A SASRec (L = 20) trained 3 epochs on the tiny LOO split, as the pipeline trains it, with
    the test-time histories (train + valid) and the targets in RecBole ids."""
    from benchmark.core.models import build_model
    from benchmark.core.training import LeanTrainer, TrainSettings
    split = tiny_loo_split
    built = build_model("SASRec", split, {"MAX_ITEM_LIST_LENGTH": 20}, seed=0)
    sequences = training_data(built.model, split.train, built.ids.item, built.ids.user)
    settings = TrainSettings(epochs=3, keep="last", learning_rate=0.01, batch_size=256)
    LeanTrainer(built, built.ids.users(split.train.users), built.ids.items(split.train.items), settings, 0,
                sequences=sequences).fit()
    history = histories(split.train.concat(split.valid), split.n_real_users, 20, built.ids.item, built.ids.user)
    return built, history, built.ids.items(TARGETS)


def _log_prob(model, seqs, targets):
    with torch.no_grad():
        return target_log_prob(model, seqs.users, seqs.items, seqs.lengths, targets)


@pytest.mark.parametrize("min_similarity", [0.5, 0.0])
def test_pollution_substitute(trained_sasrec, min_similarity):
    built, history, targets = trained_sasrec
    model = built.model
    copy = tuple(t.clone() for t in (history.users, history.items, history.lengths, history.targets))
    attack = get_attack("profile_pollution", items=2, min_similarity=min_similarity)
    polluted = attack.polluted(model, history, targets, np.random.default_rng(0))
    for kept, now in zip(copy, (history.users, history.items, history.lengths, history.targets)):
        assert torch.equal(kept, now)                                 # the input is not mutated
    assert not model.training
    changed = (polluted.items != history.items).sum(1)
    assert int(changed.max()) <= 2 and int(changed.sum()) > 0
    assert torch.equal(polluted.lengths, history.lengths) and torch.equal(polluted.users, history.users)
    padding = torch.arange(20)[None, :] >= history.lengths[:, None]
    assert (polluted.items[padding] == 0).all() and (polluted.items[~padding] > 0).all()
    again = attack.polluted(model, history, targets, np.random.default_rng(1))
    assert torch.equal(again.items, polluted.items)                   # deterministic
    before, after = _log_prob(model, history, targets), _log_prob(model, polluted, targets)
    assert float(after.mean()) > float(before.mean())
    unchanged = changed == 0
    assert torch.allclose(after[unchanged], before[unchanged])


def test_pollution_append(trained_sasrec):
    built, history, targets = trained_sasrec
    model, k, room = built.model, 2, 20
    polluted = get_attack("profile_pollution", items=k, mode="append").polluted(
        model, history, targets, np.random.default_rng(0))
    assert torch.equal(polluted.lengths, (history.lengths + k).clamp(max=room))
    assert bool((history.lengths + k > room).any()) and bool((history.lengths + k <= room).any())
    for u in range(len(history)):
        n, m = int(history.lengths[u]), int(polluted.lengths[u])
        kept = history.items[u, :n][max(0, n + k - room):].tolist()   # the oldest dropped when full
        assert polluted.items[u, :m - k].tolist() == kept
        assert (polluted.items[u, m - k:m] > 0).all() and (polluted.items[u, m:] == 0).all()
    assert float(_log_prob(model, polluted, targets).mean()) > float(_log_prob(model, history, targets).mean())


# -- 7. fake sequences ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["interleaved_sequence", "random_sequence"])
def test_fake_sequences_are_timed_as_written(tiny_loo_split, name):
    split = tiny_loo_split
    train = split.train
    attack = get_attack(name, fake_user_fraction=0.1, filler_items=4)
    context = AttackContext(split, TARGETS)
    result = attack.poison(context, seed=11)
    out = result.train
    n_fake = result.n_fake_users
    assert n_fake == 6 and out.n_users == train.n_users + n_fake
    assert rows_of(out.take(out.users < train.n_users)) == rows_of(train)
    # what the recipe wrote, with the same random stream as poison() gives it
    written = attack.profiles(context, attack.targets(context), n_fake, 4, np.random.default_rng(11)).items
    fake = out.take(out.users >= train.n_users)
    assert np.nanmin(fake.timestamps) > np.nanmax(train.timestamps)
    length = 9 if name == "interleaved_sequence" else 4 + TARGETS.size
    for k in range(n_fake):
        user = train.n_users + k
        times = fake.timestamps[fake.users == user]
        assert np.unique(times).size == times.size == length     # no ties: one order only
        sequence = [i for i, *_ in time_ordered(out, user)]
        assert sequence == list(written[k])
        if name == "interleaved_sequence":
            assert all(i in TARGETS for i in sequence[0::2])
            assert not any(i in TARGETS for i in sequence[1::2])
        else:
            assert sorted(i for i in sequence if i in TARGETS) == sorted(TARGETS.tolist())
    # and a sequential model reads them so (user_sequences' order, RecBole ids aside)
    instances = training_instances(out, 20, np.arange(out.n_items), np.arange(out.n_users))
    first_fake = instances.take((instances.users == train.n_users).nonzero().view(-1))
    longest = int(first_fake.lengths.argmax())
    assert first_fake.items[longest, :length - 1].tolist() + [int(first_fake.targets[longest])] == \
        list(written[0])


# -- defects found and fixed: tied times (ml-100k has many same-second ratings), short histories ---
def tied(split):
    """The split with its train timestamps coarsened so that runs of 3 of a user's rows tie (as
    ml-100k's many same-second ratings do)."""
    train = split.train
    return split.with_train(Interactions.build(train.users, train.items, train.ratings, train.n_users,
                                               train.n_items, np.floor(train.timestamps / 3)))


def test_noise_shuffle_with_tied_times(tiny_loo_split):
    split = tied(tiny_loo_split)
    attack, result = noise(split, seed=3, fraction=0.2, operation="shuffle", position="end")
    for u in range(split.n_real_users):
        before = [i for i, *_ in time_ordered(split.train, u)]
        after = [i for i, *_ in time_ordered(result.train, u)]
        first = len(before) - attack.per_user(len(before))
        assert after[:first] == before[:first] and after[first:] != before[first:]


def test_noise_insert_middle_with_tied_times(tiny_loo_split):
    split = tied(tiny_loo_split)
    attack, result = noise(split, seed=2, fraction=0.2, operation="insert", position="middle")
    for u in range(split.n_real_users):
        before = [i for i, *_ in time_ordered(split.train, u)]
        after = [i for i, *_ in time_ordered(result.train, u)]
        at, n = len(before) // 2, attack.per_user(len(before))
        assert after[:at] == before[:at] and after[at + n:] == before[at:]


def test_pollution_leaves_padding_alone(trained_sasrec):
    built, _, targets = trained_sasrec
    short = histories(Interactions.build([0, 1, 1], [4, 5, 6], [1, 1, 1], 2, 80, [1.0, 1.0, 2.0]), 2, 20,
                      built.ids.item, built.ids.user)
    polluted = get_attack("profile_pollution", items=3, min_similarity=0.0).polluted(
        built.model, short, targets, np.random.default_rng(0))
    padding = torch.arange(20)[None, :] >= short.lengths[:, None]
    assert (polluted.items[padding] == 0).all()
