"""The README's configuration reference lists every key the parser knows,
and nothing it does not (issue 8 §5: "the README documents every config
key"). The keys come from the tables in userspace/config.c, walked from
top_keys through their .sub tables, so a key added to the parser without
documentation fails here."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parser_keys():
    src = open(os.path.join(ROOT, "userspace", "config.c")).read()
    arrays = {}
    for m in re.finditer(r"static const struct key (\w+)\[\] = \{(.*?)\n\};", src, re.S):
        entries = []
        for e in re.finditer(r'\{\s*\.name = "([^"]+)", \.kind = (K_\w+)(.*?)\}', m.group(2), re.S):
            sub = re.search(r"\.sub = &(\w+)", e.group(3))
            entries.append((e.group(1), e.group(2), sub.group(1) if sub else None))
        arrays[m.group(1)] = entries
    tables = {m.group(1): m.group(2) for m in
              re.finditer(r"static const struct table (\w+) = \{ (\w+),", src)}
    assert "top_keys" in arrays and tables, "config.c's key tables not found"

    out = []

    def walk(array, prefix):
        for name, kind, sub in arrays[array]:
            path = prefix + name
            if kind == "K_SECTION":
                walk(tables[sub], path + ".")
            elif kind == "K_LOGS":
                walk(tables[sub], path + "[].")
            else:
                out.append(path)
    walk("top_keys", "")
    return out


def readme_keys():
    text = open(os.path.join(ROOT, "README.md")).read()
    sec = text.split("### Configuration reference", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| `([a-z_.\[\]]+)` \|", sec, re.M)


def test_every_config_key_is_in_the_readme():
    keys = parser_keys()
    assert len(keys) > 50  # the walk found the tables
    documented = readme_keys()
    missing = [k for k in keys if k not in documented]
    unknown = [k for k in documented if k not in keys]
    assert not missing, f"config keys missing from README's configuration reference: {missing}"
    assert not unknown, f"README documents keys the parser does not know: {unknown}"
    assert len(documented) == len(set(documented)), "a key is listed twice"


def test_every_config_key_is_in_the_example_config():
    text = open(os.path.join(ROOT, "etc", "agent.yaml")).read()
    for k in parser_keys():
        leaf = k.rsplit(".", 1)[-1]
        assert re.search(rf"^\s*#?\s*(- \{{ )?{re.escape(leaf)}:|[{{,] {re.escape(leaf)}:", text, re.M), \
            f"{k} is not in etc/agent.yaml"
