"""report --html and show-tree --html: one self-contained page, inert model output, pairs on their nodes.

The slow tests open the page in headless Chromium (Debian's ``chromium``), expand
a node through the page's URL fragment and read the DOM the browser built; they
skip where no Chromium executable is found.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcts_pref import html_report
from mcts_pref.cli import app
from mcts_pref.pairs import tree_pairs
from tests.conftest import write_jsonl
from tests.html_fixtures import make_run

FIXTURE = Path(__file__).parent / "fixtures" / "trees.jsonl"
ASSETS = Path(html_report.__file__).parent / "report_assets"
runner = CliRunner()

# Model output that would run, or break out of the data, if it ever reached the page as markup.
PWN = "document.body.setAttribute('data-'+'pwned','1')"
HOSTILE = [
    f"<script>{PWN}</script>\n",
    f"</script><script>{PWN}</script><!--\n",
    f"<img src=x onerror=\"{PWN}\">\n",
    "{{ 7*7 }} ${7*7} &amp; &lt;b&gt; \u2028 \u2029\n",
    "<!-- <script> --> ]]> <![CDATA[ x\n",
]


def fixture_trees() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]


def hostile_tree() -> dict:
    """Fixture tree p1 with hostile step texts on nodes 1 (path), 2, 3, 5 and 7 (below 2, collapsed at first)."""
    tree = fixture_trees()[0]
    for node, text in zip((n for n in tree["nodes"] if n["id"] in (1, 2, 3, 5, 7)), HOSTILE):
        node["text"] = text
    tree["question"] = HOSTILE[0]
    tree["problem_id"] = "<b>p1</b>"
    return tree


class Elements(HTMLParser):
    """Start tags and the text of each script element, as a browser's tokenizer sees them."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def page_data(page: str) -> dict:
    [blob] = re.findall(r'<script type="application/json" id="mp-data">(.*?)</script>', page, re.S)
    return json.loads(blob)


def nodes_of(tree_view: dict) -> list[dict]:
    keys = tree_view["nodes"]["keys"]
    return [dict(zip(keys, row)) for row in tree_view["nodes"]["rows"]]


# ---------------------------------------------------------------- pure parts


def test_embedded_json_cannot_end_the_script_element():
    data = {"text": "</script><!--<script>&\u2028\u2029>", "x": 0.123456789, "nan": float("nan")}
    blob = html_report.embed_json(data)
    assert not set(blob) & set("<>&\u2028\u2029")
    back = json.loads(blob)
    assert back == {"text": data["text"], "x": 0.1235, "nan": None}  # 4 significant digits; JSON has no NaN


def test_hostile_step_texts_stay_data(tmp_path):
    tree = hostile_tree()
    page = html_report.render_page(html_report.trees_data("t.jsonl", [tree], tree_pairs(tree)))
    parsed = Elements(page)
    # Exactly the page's own two scripts, no element from the data, no event handler attribute anywhere.
    assert [t for t, _ in parsed.tags if t == "script"] == ["script", "script"]
    assert not [t for t, _ in parsed.tags if t in ("img", "b", "iframe")]
    assert not [a for _, attrs in parsed.tags for a in attrs if a.startswith("on")]
    data = json.loads(parsed.scripts[0])
    assert data == page_data(page)
    texts = [n["text"] for n in nodes_of(data["rounds"][0]["trees"][0])]
    for text in HOSTILE:
        assert text in texts  # literally, \u2028 included
    assert data["rounds"][0]["trees"][0]["problem_id"] == "<b>p1</b>"
    # No template placeholder was touched: {{ }} is only ever data.
    assert "{{ 7*7 }}" in parsed.scripts[0]


def test_page_script_builds_the_dom_from_text_only():
    js = (ASSETS / "explorer.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "srcdoc"):
        assert sink not in js, sink
    page = (ASSETS / "page.html").read_text()
    assert "</script" not in js.lower() and "__DATA__" not in js and "__DATA__" not in (ASSETS / "explorer.css").read_text()
    assert page.count("__DATA__") == 1


def test_the_assets_ship_with_the_package():
    tomllib = pytest.importorskip("tomllib")
    globs = tomllib.loads((ASSETS.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mcts_pref"]
    for f in ASSETS.iterdir():
        assert any(f.relative_to(ASSETS.parent).match(g) for g in globs), f"{f.name} is not in pyproject's package-data"


def test_page_is_self_contained_and_its_policy_admits_only_its_script(tmp_path):
    run = make_run(tmp_path, rounds=1, trees_per_round=2)
    page = html_report.render_page(html_report.run_data(run, [{"name": "round-1"}]))
    parsed = Elements(page)
    # Nothing to fetch: no external resource of any kind, and a policy that forbids it anyway.
    for tag, attrs in parsed.tags:
        assert not {"src", "href", "srcset", "action"} & set(attrs), (tag, attrs)
        assert tag not in ("link", "iframe", "object", "embed", "img")
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)
    [csp] = [a["content"] for t, a in parsed.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in csp
    digest = base64.b64encode(hashlib.sha256(parsed.scripts[1].encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp  # the one script that may run is the page's own


def test_pairs_are_put_on_their_nodes():
    p1, p2 = fixture_trees()
    placed = html_report.place_pairs(p1, tree_pairs(p1))
    # tests/test_pairs.py works these out: depth 1 chosen 1 vs node 2 merged with its chain 7 -> 8,
    # depth 2 chosen 4 merged with its only child 6 vs 5.
    assert [(p["depth"], p["chosen_node"], p["rejected_node"]) for p in placed] == [(1, 1, 2), (2, 4, 5)]
    assert placed[0]["label_smoothing"] == pytest.approx(0.25) and "chosen" not in placed[0]
    # A pair whose prompt is not this tree's path, or whose text matches no node, keeps its texts instead.
    stray = dict(tree_pairs(p1)[1], prompt="another prompt")
    odd = dict(tree_pairs(p1)[0], rejected="never generated\n")
    [s, o] = html_report.place_pairs(p1, [stray, odd])
    assert s["chosen_node"] is None and s["chosen"] == "5 - 1 = 4\nThe answer is 4.\n"
    assert (o["chosen_node"], o["rejected_node"], o["rejected"]) == (1, None, "never generated\n")
    assert html_report.place_pairs(p2, tree_pairs(p2, rule="first-error")) == []


def test_round_view_limits_trees_and_counts_them_all():
    trees = fixture_trees()
    rv = html_report.round_view("r", trees + [{"problem_id": "torn"}], [], max_trees=1)
    assert rv["shown"] == 1 and [t["problem_id"] for t in rv["trees"]] == ["p1"]
    assert rv["summary"]["trees"] == 2 and rv["summary"]["skipped_records"] == 1 and rv["summary"]["correct"] == 1
    assert html_report.round_view("r", trees, [], max_trees=1, keep="p2")["shown"] == 2  # the asked-for tree is kept
    assert html_report.round_view("r", trees, [], max_trees=0)["shown"] == 2  # 0: all
    node = {n["id"]: n for n in nodes_of(rv["trees"][0])}
    assert (node[7]["N"], node[7]["Q"], node[7]["parent"], node[6]["terminal"], node[6]["correct"]) == (1, -0.5, 2, True, True)
    assert node[1].get("terminal") is None and "token_ids" not in rv["trees"][0]["nodes"]["keys"]


# ---------------------------------------------------------------- through the CLI


def test_report_html(tmp_path):
    run = make_run(tmp_path, rounds=2, trees_per_round=3)
    out = tmp_path / "report.html"
    r = runner.invoke(app, ["report", str(run), "--html", str(out), "--trees", "2"])
    assert r.exit_code == 0, r.output
    assert "round-1 2 of 3" in r.output and out.exists()
    data = page_data(out.read_text())
    assert [row["name"] for row in data["rows"]] == ["round-0", "round-1", "round-2"]
    assert data["rows"][1]["vs_round0"]["n"] == 40 and data["rows"][1]["trees"] == 3  # the tables count every tree
    assert [(rv["name"], rv["shown"], rv["summary"]["trees"]) for rv in data["rounds"]] == [("round-1", 2, 3), ("round-2", 2, 3)]
    pairs = [p for rv in data["rounds"] for t in rv["trees"] for p in t["pairs"]]
    assert pairs and all(p["chosen_node"] is not None and p["rejected_node"] is not None for p in pairs)
    r = runner.invoke(app, ["report", str(run), str(run), "--html", str(out)])
    assert r.exit_code == 2 and "one RUN" in r.output


def test_show_tree_html(tmp_path):
    trees = write_jsonl(tmp_path / "trees.jsonl", fixture_trees())
    write_jsonl(tmp_path / "pairs.jsonl", [p for t in fixture_trees() for p in tree_pairs(t)])
    out = tmp_path / "trees.html"
    r = runner.invoke(app, ["show-tree", str(trees), "--html", str(out), "--id", "p2"])
    assert r.exit_code == 0, r.output
    data = page_data(out.read_text())
    assert data["rows"] is None and data["select"]["problem"] == "p2"
    [rv] = data["rounds"]
    assert [[(p["chosen_node"], p["rejected_node"]) for p in t["pairs"]] for t in rv["trees"]] == [[(1, 2), (4, 5)], [(1, 2)]]
    r = runner.invoke(app, ["show-tree", str(trees), "--html", str(out), "--id", "nope"])
    assert r.exit_code == 2 and "no tree with problem id 'nope'" in r.output


def test_a_demo_sized_run_stays_under_3_mb(tmp_path):
    """3 rounds x 64 trees searched with the demo loop's knobs, all embedded."""
    run = make_run(tmp_path, rounds=3, trees_per_round=64)
    out = tmp_path / "report.html"
    r = runner.invoke(app, ["report", str(run), "--html", str(out)])
    assert r.exit_code == 0, r.output
    data = page_data(out.read_text())
    assert [rv["shown"] for rv in data["rounds"]] == [64, 64, 64]
    assert out.stat().st_size < 3e6, out.stat().st_size


# ---------------------------------------------------------------- in a real browser


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def browse(page: Path, fragment: str, tmp_path: Path, *extra: str) -> str:
    """Chromium's flags for a one-shot headless load; returns stdout (the DOM with --dump-dom)."""
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium executable (apt-get install chromium)")
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *extra, page.resolve().as_uri() + fragment]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def element_text(dom: str, element_id: str) -> str:
    """The text inside the element with ``element_id`` (entities decoded, whitespace runs as one space)."""

    class Finder(HTMLParser):
        depth, parts, found = 0, [], False

        def handle_starttag(self, tag, attrs):
            if self.depth:
                self.depth += tag not in VOID
            elif dict(attrs).get("id") == element_id:
                self.depth, self.found = 1, True

        def handle_endtag(self, tag):
            if self.depth:
                self.depth -= 1

        def handle_data(self, data):
            if self.depth:
                self.parts.append(data)

    f = Finder(convert_charrefs=True)
    f.parts = []
    f.feed(dom)
    assert f.found, f"no element #{element_id} in the DOM"
    return squash(" ".join(f.parts))


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.slow
def test_browser_expands_a_node_and_shows_its_statistics(tmp_path):
    trees = write_jsonl(tmp_path / "trees.jsonl", fixture_trees())
    write_jsonl(tmp_path / "pairs.jsonl", [p for t in fixture_trees() for p in tree_pairs(t)])
    page = tmp_path / "trees.html"
    assert runner.invoke(app, ["show-tree", str(trees), "--html", str(page)]).exit_code == 0

    # At first the committed path is open: node 2 (off the path) shows, its child 7 does not.
    dom = browse(page, "", tmp_path, "--dump-dom")
    assert 'id="node-2"' in dom and 'id="node-7"' not in dom and 'id="detail-7"' not in dom
    assert "N 6" in element_text(dom, "node-1")  # a row's own N badge
    # Node 7 ("6 - 1 = 5", N 1, Q -0.5) asked for in the URL: its branch expands and its details open.
    dom = browse(page, "#problem=p1&node=7", tmp_path, "--dump-dom")
    detail = element_text(dom, "detail-7")
    assert re.search(r"N \(visits\)\s+1\b", detail) and re.search(r"\bQ\s+-0\.500\b", detail), detail
    assert "6 - 1 = 5" in detail and "rejected ε 0.25" in element_text(dom, "node-2")

    shot = tmp_path / "explorer.png"
    browse(page, "#problem=p1&node=7", tmp_path, "--window-size=1280,900", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


@pytest.mark.slow
def test_browser_runs_no_model_output(tmp_path):
    tree = hostile_tree()
    trees = write_jsonl(tmp_path / "trees.jsonl", [tree])
    page = tmp_path / "hostile.html"
    assert runner.invoke(app, ["show-tree", str(trees), "--html", str(page)]).exit_code == 0
    for node in (2, 7):  # each opens a hostile node's details; 7 sits below 2, so its URL opens both branches
        dom = browse(page, f"#node={node}", tmp_path, "--dump-dom")
        assert "pwned=" not in dom  # no injected script or handler ran
        assert "<img" not in dom and "<b>p1" not in dom  # and no element came from the data
        assert dom.count("<script") == 2
    shown = element_text(dom, "tree")  # with node 7 open every node is drawn
    for text in HOSTILE:
        assert squash(text) in shown, text
    assert squash(HOSTILE[4]) in element_text(dom, "detail-7")
    # Entity-like text stays as typed (not decoded), and so does the problem id in the heading.
    assert "{{ 7*7 }} ${7*7} &amp; &lt;b&gt;" in shown and "problem <b>p1</b>" in element_text(dom, "tree-pane")
