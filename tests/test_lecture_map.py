"""docs/lecture-map.md stays true: every link leads to a file (and heading) that exists, every name linked
to a Python file is defined there (read with `ast`, nothing imported), every command names a model,
sub-command or figure that exists, every point says what shows it or that nothing does, and every topic
line of the course outline (../shared/lectures.md beside the repository) is quoted in the map."""
import ast
import functools
import html
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "lecture-map.md"
LECTURES = ROOT.parent / "shared" / "lectures.md"
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`]+)`")
HEADER = ["point", "shown by", "command", "picture"]


def slug(heading):
    """The anchor a Markdown heading gets: lower case, punctuation dropped, spaces -> hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path):
    return {slug(line.lstrip("#")) for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")}


@functools.lru_cache(maxsize=None)
def defined_names(path):
    """Top-level functions, classes and assigned names of a Python file, and Class.method for methods."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names.update(f"{node.name}.{m.name}" for m in node.body
                             if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)))
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def module_constant(path, name):
    """The literal value of a top-level assignment `name = {...}` in a Python file."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(f"{path.name} assigns no {name}")


def string_constants(path):
    return {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def cells(line):
    """The cells of a Markdown table row (`\\|` is a pipe inside a cell)."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]


def map_rows(text):
    """(topic heading, [point, shown by, command, picture]) for every row of the map's tables."""
    rows, topic, header = [], None, None
    for line in text.splitlines():
        if line.startswith("### "):
            topic, header = line[4:].strip(), None
        elif line.startswith("|"):
            row = cells(line)
            if header is None:
                header = row
                assert header == HEADER, f"{topic}: a table's columns must be {HEADER}, not {header}"
            elif not set(line) <= set("|- "):
                assert len(row) == len(HEADER), f"{topic}: a row of {len(row)} cells: {line}"
                rows.append((topic, row))
        else:
            header = None if not line.strip() else header
    return rows


def normalized(text):
    return " ".join(text.split())


def sections(text, quoted):
    """{'## ' heading: [topic texts]}: the bullets of the outline, or the quotes ('> ') of the map."""
    out, current, item = {}, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            current = out.setdefault(line[3:].strip(), [])
            item = None
        elif current is None:
            continue
        elif quoted and line.startswith(">"):
            if item is None:
                item = [line[1:]]
                current.append(item)
            else:
                item.append(line[1:])
        elif not quoted and line.startswith("- "):
            item = [line[2:]]
            current.append(item)
        elif not quoted and item is not None and line.startswith("  ") and line.strip():
            item.append(line)
        else:
            item = None
    unescape = html.unescape if quoted else str          # the map writes "<" as "&lt;" so that it shows
    return {heading: [unescape(normalized(" ".join(i))) for i in items] for heading, items in out.items()}


def test_every_link_leads_to_a_file_and_every_linked_name_is_defined_there():
    text = MAP.read_text(encoding="utf-8")
    links = LINK.findall(text)
    assert len(links) > 100
    checked_names = 0
    for label, target in links:
        assert not target.startswith(("http:", "https:", "/")), f"the map links only inside the repository: {target}"
        path, _, fragment = target.partition("#")
        file = (MAP.parent / path).resolve()
        assert file.exists(), f"[{label}]({target}): no such file {file.relative_to(ROOT)}"
        assert ROOT in file.parents, f"[{label}]({target}) leads out of the repository"
        if fragment:
            assert fragment in anchors(file), f"[{label}]({target}): {path} has no heading #{fragment}"
        name = re.fullmatch(r"`([\w.]+)`", label)
        if file.suffix == ".py" and name and not name.group(1).endswith(".py"):
            assert name.group(1) in defined_names(file), \
                f"[{label}]({target}): {name.group(1)} is not defined in {file.relative_to(ROOT)}"
            checked_names += 1
    assert checked_names > 100


def test_every_point_says_what_shows_it_and_every_command_names_what_exists():
    rows = map_rows(MAP.read_text(encoding="utf-8"))
    assert len(rows) > 80
    models = module_constant(ROOT / "tinygen" / "models" / "registry.py", "MODULES")
    figures = module_constant(ROOT / "docs" / "figures.py", "RUNS")
    evaluate_words = string_constants(ROOT / "tinygen" / "evaluate.py")
    for topic, (point, shown, command, picture) in rows:
        assert point, f"{topic}: a row without its point"
        assert LINK.search(shown) or shown.startswith("not shown"), \
            f"{topic} / {point}: say what shows it (a link) or 'not shown'"
        if shown.startswith("not shown"):
            assert not picture or LINK.search(picture), f"{topic} / {point}"
        for cmd in CODE.findall(command):
            for m in re.finditer(r"python -m tinygen (?:train|sample|evaluate|edit) (\S+)", cmd):
                assert m.group(1) in models, f"{topic}: {cmd!r} names no registered model"
            for m in re.finditer(r"python -m tinygen\.evaluate (\S+)", cmd):
                assert m.group(1) in evaluate_words, f"{topic}: {cmd!r}: no such tinygen.evaluate command"
            for m in re.finditer(r"docs/figures\.py --only (\S+)", cmd):
                assert m.group(1) in figures, f"{topic}: {cmd!r}: docs/figures.py draws no {m.group(1)}"
            for m in re.finditer(r"python (?:-m pytest -q )?((?:tests|benchmarks|docs|examples)/\S+)", cmd):
                assert (ROOT / m.group(1)).exists(), f"{topic}: {cmd!r}: no {m.group(1)}"
        for label, target in LINK.findall(picture):
            assert target.endswith((".png", ".gif")), f"{topic}: the picture column holds pictures, not {target}"


@pytest.mark.skipif(not LECTURES.exists(), reason=f"the course outline is not at {LECTURES} (a clone "
                    "elsewhere): the coverage of its topics cannot be checked")
def test_every_topic_line_of_the_course_is_quoted_in_its_section():
    outline = sections(LECTURES.read_text(encoding="utf-8"), quoted=False)
    quoted = sections(MAP.read_text(encoding="utf-8"), quoted=True)
    assert sum(map(len, outline.values())) > 20
    assert list(quoted) == list(outline), "the map's sections must be the outline's, in its order"
    for heading, topics in outline.items():
        for topic in topics:
            assert topic in quoted[heading], f"'{heading}': the map does not quote the topic {topic[:70]!r}..."
        for quote in quoted[heading]:
            assert quote in topics, f"'{heading}': the map quotes {quote[:70]!r}..., which is no topic of the outline"


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The parsers find a missing name, a bad row and an unquoted topic (the checks above can fail)."""
    py = tmp_path / "m.py"
    py.write_text("X = 1\nclass A:\n    def f(self):\n        pass\ndef g():\n    pass\n")
    assert defined_names(py) == {"X", "A", "A.f", "g"}
    rows = map_rows("### T\n\n| point | shown by | command | picture |\n| --- | --- | --- | --- |\n"
                    "| a \\| b | not shown | | |\n")
    assert rows == [("T", ["a \\| b", "not shown", "", ""])]
    assert sections("## S\n- one\n  two\n- three\n", quoted=False) == {"S": ["one two", "three"]}
    assert sections("## S\n\n> one\n> &lt;two&gt;\n\ntext\n", quoted=True) == {"S": ["one <two>"]}
    assert slug("Rolfe's discrete VAE (dvae_rolfe)") == "rolfes-discrete-vae-dvae_rolfe"
    assert slug("DALL·E's dVAE (dvae)") == "dalles-dvae-dvae"
