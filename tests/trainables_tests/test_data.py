"""trainables.data: every loader format, leave-one-out, masks, and one-line errors naming file and line."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import assert_location, raises_tuner_error, write
from trainables import data as D
from trainables import datasets


def seqs_of(d: D.Dataset) -> dict[str, list[str]]:
    """Full chronological sequence per original user (train + valid + test), in original item ids."""
    ids = d.item_ids
    out = {}
    for u in range(d.n_users):
        tr = d.train_items[d.train_indptr[u] : d.train_indptr[u + 1]]
        out[u] = [ids[i] for i in [*tr, d.valid[u], d.test[u]]]
    return out


# the same 2 users in every format: u7 -> a b c d, u3 -> c e a
PAIRS = "u7 a\nu7 b\nu3 c\nu7 c\nu3 e\nu7 d\nu3 a\n"
SEQUENCES = "u7 a b c d\n\nu3 c e a\n"
EXPECTED = {0: ["a", "b", "c", "d"], 1: ["c", "e", "a"]}


@pytest.mark.parametrize("name,text,fmt", [
    ("p.txt", PAIRS, "pairs"),
    ("p.txt", PAIRS, "auto"),
    ("s.txt", SEQUENCES, "sequences"),
    ("s.txt", SEQUENCES, "auto"),
])
def test_text_formats(tmp_path, name, text, fmt):
    d = D.load(write(tmp_path, name, text), fmt)
    assert (d.n_users, d.n_items) == (2, 5)
    assert seqs_of(d) == EXPECTED
    # dense ids in order of first appearance
    assert list(d.item_ids) == ["a", "b", "c", "d", "e"]
    assert d.train_items.tolist() == [0, 1, 2]  # u7: a b | u3: c
    assert d.train_indptr.tolist() == [0, 2, 3]
    assert d.valid.tolist() == [2, 4] and d.test.tolist() == [3, 0]
    assert d.train_items.dtype == np.int64


# rows out of time order; the two rows at t=5 for u1 keep their file order (stable sort)
TABLE_ROWS = [("u1", "x", "9"), ("u2", "y", "1"), ("u1", "y", "5"), ("u1", "z", "5"), ("u2", "x", "2"),
              ("u1", "w", "1"), ("u2", "w", "3")]


@pytest.mark.parametrize("fmt,ext,header,sep", [
    ("csv", "csv", "user_id,item_id,timestamp", ","),
    ("tsv", "tsv", "user\titem\ttime", "\t"),
    ("inter", "inter", "user_id:token\titem_id:token\ttimestamp:float", "\t"),
])
@pytest.mark.parametrize("explicit", [True, False])
def test_table_formats_sorted_by_time(tmp_path, fmt, ext, header, sep, explicit):
    text = header + "\n" + "".join(sep.join(r) + "\n" for r in TABLE_ROWS)
    d = D.load(write(tmp_path, f"t.{ext}", text), fmt if explicit else "auto")
    # chronological per user; u2 comes first because its first event (t=1, line 3) precedes u1's (t=1, line 7)
    assert seqs_of(d) == {0: ["y", "x", "w"], 1: ["w", "y", "z", "x"]}
    assert d.n_items == 4 and list(d.item_ids) == ["y", "x", "w", "z"]


def test_csv_without_timestamp_keeps_file_order_and_tolerates_bom(tmp_path):
    d = D.load(write(tmp_path, "t.csv", "\ufeffUser,Item,rating\n1,b,5\n1,a,3\n1,c,1\n"))
    assert seqs_of(d) == {0: ["b", "a", "c"]}


def test_split_masks(tmp_path):
    d = D.load(write(tmp_path, "s.txt", SEQUENCES))
    valid, test = d.split("valid"), d.split("test")
    assert valid.targets.tolist() == d.valid.tolist()
    assert valid.seen_indptr.tolist() == [0, 2, 3] and valid.seen_items.tolist() == [0, 1, 2]
    # test: each user's training items + the validation item
    assert test.targets.tolist() == d.test.tolist()
    assert test.seen_indptr.tolist() == [0, 3, 5]
    assert test.seen_items.tolist() == [0, 1, 2, 2, 4]
    assert d.train_counts().tolist() == [1, 1, 1, 0, 0]
    assert d.train_users().tolist() == [0, 0, 1]
    with pytest.raises(ValueError):
        d.split("train")


@pytest.mark.parametrize("name,text,fmt,line,fragment", [
    ("p.txt", "1 a\n1 b\n1 c d\n1 e\n", "pairs", 3, "3 fields"),
    ("p.txt", "1 a\n1 b\n1 c d\n1 e\n", "auto", 3, "3 fields"),  # auto-detection still reads pairs
    ("s.txt", "1 a b c\n2\n", "sequences", 2, "only '2'"),
    ("s.txt", "1 a b c\n2 a b c\n1 d e f\n", "sequences", 3, "already appeared on line 1"),
    ("t.csv", "user,item,ts\n1,a,1\n1,b\n", "csv", 3, "expected 3 fields, got 2"),
    ("t.csv", 'user,item,ts\n1,"a\nb",1\n1,c,2\n1,d,yesterday\n', "csv", 5, "'yesterday' is not a number"),
    ("t.csv", "user,item,ts\n1,a,1\n1,b,nan\n1,c,3\n", "csv", 3, "not a finite number"),
    ("t.csv", "customer,item\n1,a\n", "csv", 1, "no user column"),
    ("t.tsv", "user\tproduct\n1\ta\n", "tsv", 1, "no item column"),
    ("t.inter", "user_id\titem_id:token\n1\ta\n", "inter", 1, "name:type"),
    ("t.txt", "a 1\na 2\nb 1\nb 2\nb 3\na 3\nc 1\nc 2\n", "pairs", 7, "user 'c' has 2 interaction(s)"),
])
def test_malformed_input_names_file_and_line(tmp_path, name, text, fmt, line, fragment):
    path = write(tmp_path, name, text)
    msg = raises_tuner_error(D.load, path, fmt)
    assert_location(msg, path, line)
    assert fragment in msg


@pytest.mark.parametrize("name,fmt", [("e.txt", "auto"), ("e.txt", "pairs"), ("e.txt", "sequences"),
                                      ("e.csv", "auto"), ("h.csv", "csv")])
def test_empty_file(tmp_path, name, fmt):
    path = write(tmp_path, name, "user,item\n" if name == "h.csv" else "")
    msg = raises_tuner_error(D.load, path, fmt)
    assert_location(msg, path)
    assert "no interactions" in msg


def test_missing_file_and_unknown_format(tmp_path):
    path = str(tmp_path / "nope.txt")
    msg = raises_tuner_error(D.load, path)
    assert_location(msg, path)
    assert "no such" in msg
    path = write(tmp_path, "p.txt", PAIRS)
    assert "unknown data format" in raises_tuner_error(D.load, path, "parquet")


def test_not_utf8(tmp_path):
    p = tmp_path / "b.txt"
    p.write_bytes(b"1 \xff\xfe\n1 a\n1 b\n")
    msg = raises_tuner_error(D.load, str(p))
    assert_location(msg, str(p))
    assert "UTF-8" in msg


def test_item_attributes(tmp_path):
    d = D.load(write(tmp_path, "s.txt", "1 10 20 30\n2 30 40 10\n"))
    attrs = write(tmp_path, "a.json", '{"10": [1, 2], "30": [2], "99": [7]}')
    feats = D.load_item_attributes(attrs, d)
    assert feats.shape == (4, 2) and feats.dtype == np.float32
    assert feats.tolist() == [[1, 1], [0, 0], [0, 1], [0, 0]]  # items 10, 20, 30, 40


def test_dataset_for_a_file_spec_with_attributes(tmp_path):
    from tuner.spec import load

    (tmp_path / "d").mkdir()
    write(tmp_path, "d/s.txt", "1 10 20 30\n2 30 40 10\n")
    write(tmp_path, "d/a.json", '{"10": [5], "40": [6]}')
    spec = load(write(tmp_path, "spec.yaml", "model: bpr_mf\n"
                      "data: {source: file, path: d/s.txt, item_attributes: d/a.json}\n"))
    d = datasets.dataset_for(spec)  # both paths resolved against the spec's folder
    assert (d.n_users, d.n_items) == (2, 4)
    assert d.item_features.tolist() == [[1, 0], [0, 0], [0, 0], [0, 1]]


def test_refit_data_trains_on_the_validation_item_and_keeps_only_the_test_target(tmp_path):
    d = D.load(write(tmp_path, "s.txt", SEQUENCES), "sequences")  # u7 -> a b c d, u3 -> c e a
    r = D.with_validation_in_training(d)
    ids = d.item_ids
    hist = [[ids[i] for i in r.train_items[r.train_indptr[u]:r.train_indptr[u + 1]]] for u in range(r.n_users)]
    assert hist == [["a", "b", "c"], ["c", "e"]]  # the validation items c and e are training data now
    # its 'valid' split is the original test split: same targets, same masked items
    t, v = d.split("test"), r.split("valid")
    assert list(v.targets) == list(t.targets) == [d.test[0], d.test[1]]
    assert list(v.seen_indptr) == list(t.seen_indptr) and list(v.seen_items) == list(t.seen_items)
    assert [list(x) for x in r.sequences("valid")] == [list(x) for x in d.sequences("test")]
    assert list(r.train_counts()) == list(np.bincount(t.seen_items, minlength=d.n_items))
    with pytest.raises(ValueError, match="'valid' split"):
        r.split("test")  # its test split would mask the target itself
    assert r.describe().endswith("7 interactions") and d.describe().endswith("7 interactions")  # counted once
