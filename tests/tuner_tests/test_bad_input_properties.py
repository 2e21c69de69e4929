"""Issue 18, bad input, as properties: whatever the bytes, the spec loader, `--set` and the data loaders
either succeed or raise a TunerError of one line, <= 300 chars, that starts with the file's path (or
names the `--set` flag). Never any other exception. Bounded example counts keep the file under a minute.
"""

from __future__ import annotations

import glob
import json
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from trainables import data as D
from tuner import spec as S
from tuner.cli import _overrides
from trainables.errors import TunerError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPACES = sorted(glob.glob(os.path.join(ROOT, "search_spaces", "*.yaml")))
# TUNER_HYPOTHESIS_EXAMPLES=5000 for a long hunt; the default keeps the file well under a minute
FAST = settings(max_examples=int(os.environ.get("TUNER_HYPOTHESIS_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def holds_contract(fn, *prefixes: str):
    """Call fn; a TunerError must be one line, <= 300 chars, starting with (or naming) a prefix."""
    try:
        return fn()
    except TunerError as e:
        msg = str(e)
        assert "\n" not in msg and len(msg) <= 300, msg
        assert any(msg.startswith(p) for p in prefixes) or any(p in msg for p in prefixes if p.startswith("--")), msg
        return None


# --- (a) arbitrary bytes as a spec file --------------------------------------------------------------

YAMLISH = st.lists(st.sampled_from([
    "model: bpr_mf\n", "name: x\n", "search: {samples: 2}\n", "&a ", "*a ", "<<: ", "- ", "? ", ": ", "{", "}",
    "[", "]", "\t", "  ", "\n", "!!python/object ", "!!binary ", "'", '"', "#", "%YAML 1.1\n", "---\n", "...\n",
    "1e23", ".nan", "~", "\ufeff", "\x00", "\xff", "!!set ", "!!omap ", "!!pairs ", "!!timestamp ", "!!int ",
    "!!float ", "!!str ", "!!bool ", "!!null ", "2024-13-45", "0x1F", "0o17", "1_000", "+.inf", "fixed: ", "space: ",
]), max_size=30).map("".join)


@FAST
@given(content=st.one_of(st.binary(max_size=600), YAMLISH.map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_spec_loader_any_bytes(tmp_path, content):
    path = str(tmp_path / "spec.yaml")
    with open(path, "wb") as fh:
        fh.write(content)
    holds_contract(lambda: S.load(path), path)


# --- (b) structural mutations of the shipped search spaces -------------------------------------------

def _paths(node, prefix=()):
    """Every key path of a nested mapping (lists are leaves)."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out.extend(_paths(v, prefix + (k,)))
    return out


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from([10**23, 1e23, "1e23", 2**64, -10**30, "x" * 500]))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                      max_leaves=6)


@st.composite
def mutated_space(draw):
    """(file text) of a shipped space with one structural mutation."""
    with open(draw(st.sampled_from(SPACES)), encoding="utf-8") as fh:
        text = fh.read()
    body = yaml.safe_load(text)
    kind = draw(st.sampled_from(["drop", "replace", "huge", "duplicate", "alias", "add"]))
    if kind in ("duplicate", "alias"):
        lines = [ln for ln in text.splitlines() if ln and not ln.startswith((" ", "#"))]
        ln = draw(st.sampled_from(lines))
        return text + "\n" + ln + "\n" if kind == "duplicate" else text.replace(ln, ln.replace(": ", ": &x ", 1), 1) + "\nzz: *x\n"
    path = draw(st.sampled_from(_paths(body)))
    node = body
    for k in path[:-1]:
        node = node[k]
    if kind == "drop":
        del node[path[-1]]
    elif kind == "add":
        node[draw(st.text(max_size=8))] = draw(VALUES)
    else:
        node[path[-1]] = draw(VALUES) if kind == "replace" else draw(st.sampled_from([10**23, 1e23, "1.0e23", 2**64, -1]))
    return yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


@FAST
@given(text=mutated_space())
def test_shipped_spaces_mutated(tmp_path, text):
    path = str(tmp_path / "space.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    holds_contract(lambda: S.load(path), path)


# --- (c) data loaders: arbitrary bytes, mutated lines -------------------------------------------------

GOOD_LINES = {
    "pairs": ["u1 a", "u1 b", "u1 c", "u2 a", "u2 c", "u2 d"],
    "sequences": ["u1 a b c", "u2 c d a e"],
    "csv": ["user,item,timestamp", "u1,a,1", "u1,b,2", "u1,c,3", "u2,a,1", "u2,b,5", "u2,c,9"],
    "tsv": ["user\titem", "u1\ta", "u1\tb", "u1\tc", "u2\ta", "u2\tb", "u2\tc"],
    "inter": ["user_id:token\titem_id:token", "u1\ta", "u1\tb", "u1\tc", "u2\ta", "u2\tb", "u2\tc"],
}
EXT = {"pairs": "txt", "sequences": "txt", "csv": "csv", "tsv": "tsv", "inter": "inter"}
JUNK = st.sampled_from(["", " ", ",", "\t", '"', "\x00", "nan", "inf", "-", "x" * 200, "é", "\r", ":", "1e999"])


@st.composite
def data_file(draw):
    fmt = draw(st.sampled_from(sorted(GOOD_LINES)))
    if draw(st.booleans()):
        return fmt, draw(st.binary(max_size=400))
    lines = list(GOOD_LINES[fmt])
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["junk", "drop", "dup", "text"]))
        if op == "junk":
            j = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:j] + draw(JUNK) + lines[i][j:]
        elif op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        else:
            lines[i] = draw(st.text(max_size=30))
    return fmt, "\n".join(lines).encode("utf-8", "surrogatepass")


@FAST
@given(case=data_file(), auto=st.booleans())
def test_data_loaders_any_bytes(tmp_path, case, auto):
    fmt, content = case
    path = str(tmp_path / f"d.{EXT[fmt]}")
    with open(path, "wb") as fh:
        fh.write(content)
    holds_contract(lambda: D.load(path, "auto" if auto else fmt), path)


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)),
                       lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "c", "x"]), c,
                                                                             max_size=4), max_leaves=10)


@FAST
@given(content=st.one_of(st.binary(max_size=200), JSONISH.map(lambda v: json.dumps(v).encode())))
def test_item_attributes_any_bytes(tmp_path, content):
    data = D.from_sequences("t", ["u1", "u2"], [["a", "b", "c"], ["c", "x", "a"]])
    path = str(tmp_path / "attrs.json")
    with open(path, "wb") as fh:
        fh.write(content)
    holds_contract(lambda: D.load_item_attributes(path, data), path)


# --- (d) arbitrary --set key=value --------------------------------------------------------------------

KEYS = st.one_of(st.sampled_from(["search.samples", "search.seed", "name", "model", "fixed.epochs", "fixed",
                                  "space.lr.low", "data.synthetic.n_items", "resources.cpu", "tracking.uri",
                                  "eval.ks", "scheduler.type", "space", "search.samples.x", ""]),
                 st.text(max_size=15))
SET_VALUES = st.one_of(st.text(max_size=40), YAMLISH, st.sampled_from(["1e23", "1.0e23", "-1", "[1", "{a: 1, a: 2}",
                                                                        "&a 1", "*a", "9" * 5000, "http://[::1/"]))


@FAST
@given(key=KEYS, value=SET_VALUES, eq=st.booleans())
def test_set_overrides_any_string(tmp_path, key, value, eq):
    path = str(tmp_path / "spec.yaml")
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write("model: bpr_mf\nfixed: {epochs: 2}\nsearch: {samples: 2}\n")
    item = f"{key}={value}" if eq else key + value.replace("=", "")
    holds_contract(lambda: S.load(path, _overrides([item])), path, "--set")


@pytest.mark.parametrize("space", SPACES, ids=[os.path.basename(p) for p in SPACES])
def test_shipped_spaces_still_load(space):
    """The mutations above start from valid files (sasrec_beauty reads ../shared/data, if present)."""
    holds_contract(lambda: S.load(space), space)
