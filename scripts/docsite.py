# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The user guides in the layout of the Ansible docs site (docs/docsite/rst/),
generated from docs/*.md, which stay the one source: edit the .md, then run
this. tests/unit/scripts/test_docsite.py fails when the two are out of step.

    python scripts/docsite.py           rewrite docs/docsite/rst/*.rst from docs/*.md
    python scripts/docsite.py --check   exit 1 and show the difference when one is stale

Each guide becomes docs/docsite/rst/NAME.rst with the label
ansible_collections.grayrelease.canary.docsite.NAME (NAME with '-' as '_')
and one label per heading (the guide's label, '.', GitHub's anchor of the
heading), so a link to another guide, or to one of its headings, becomes a
:ref: on the docs site. A link to any other file of the repository becomes
an absolute link to it on GitHub (the repository galaxy.yml names).
"""

from __future__ import annotations

import argparse
import difflib
import os
import posixpath
import re
import sys
import unicodedata

import yaml
from markdown_it import MarkdownIt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
OUT = os.path.join(DOCS, "docsite", "rst")
# The guides on the docs site, in the order of docs/docsite/extra-docs.yml.
GUIDES = ["quickstart", "user-guide", "recipes", "haproxy", "nginx", "containers", "routing", "notifications", "ssh",
          "scale", "awx", "troubleshooting"]
PREFIX = "ansible_collections.grayrelease.canary.docsite."
HEADINGS = {1: "=", 2: "-", 3: "^", 4: "~", 5: "'", 6: '"'}
LANGUAGES = {"yaml": "yaml", "yml": "yaml", "ini": "ini", "json": "json", "nginx": "nginx", "sh": "shell",
             "shell": "shell", "bash": "shell", "console": "console", "python": "python", "jinja": "jinja"}
# Characters after which RST inline markup may start, and before which it may end, without an escape.
OPENERS = " \n\t-:/'\"<([{"
CLOSERS = " \n\t-.,:;!?\\/'\")]}>"


def repository():
    with open(os.path.join(REPO, "galaxy.yml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)["repository"].rstrip("/")


def label(name, anchor=None):
    return PREFIX + name.replace("-", "_") + ("." + anchor if anchor else "")


def slug(text):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as '-'."""
    text = text.strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return text.replace(" ", "-")


def width(text):
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def escape(text):
    text = text.replace("\\", "\\\\")
    text = re.sub(r"([*`|])", r"\\\1", text)
    # A trailing '_' makes a reference (word_), a leading one a target (_`x`).
    return re.sub(r"(?<=\w)_(?!\w)|(?<!\w)_(?=[`\w])", r"\\_", text)


def literal(text):
    if "``" in text or text != text.strip() or not text:
        return ":literal:`%s`" % text.replace("\\", "\\\\").replace("`", "\\`")
    return "``%s``" % text


class Converter(object):
    """One Markdown guide as reStructuredText."""

    def __init__(self, name, text):
        self.name = name
        self.text = text
        self.repo = repository()
        self.parser = MarkdownIt("commonmark").enable("table")
        self.anchors = {}

    # --- links ------------------------------------------------------------
    def target(self, href):
        """('ref', label) for a guide or one of its headings, ('url', url) otherwise."""
        if re.match(r"^[a-z]+:", href):
            return "url", href
        path, dummy, anchor = href.partition("#")
        if not path:
            return "ref", label(self.name, anchor or None)
        resolved = posixpath.normpath(posixpath.join("docs", path))
        guide = posixpath.basename(resolved)[:-3] if resolved.endswith(".md") else None
        if guide in GUIDES and posixpath.dirname(resolved) == "docs":
            return "ref", label(guide, anchor or None)
        kind = "tree" if os.path.isdir(os.path.join(REPO, resolved)) else "blob"
        return "url", "%s/%s/main/%s%s" % (self.repo, kind, resolved, "#" + anchor if anchor else "")

    # --- inline -------------------------------------------------------------
    def plain(self, children):
        return "".join(c.content if c.type in ("text", "code_inline") else self.plain(c.children or [])
                       for c in children)

    def inline(self, children):
        """Inline tokens as RST: a list of (text, is_markup) pieces joined with the escapes RST needs."""
        pieces = []
        i = 0
        while i < len(children):
            tok = children[i]
            if tok.type == "text":
                pieces.append((escape(tok.content), False))
            elif tok.type == "softbreak":
                pieces.append(("\n", False))
            elif tok.type == "hardbreak":
                pieces.append(("\n", False))
            elif tok.type == "code_inline":
                pieces.append((literal(tok.content), True))
            elif tok.type in ("strong_open", "em_open", "link_open"):
                close = tok.type.replace("_open", "_close")
                depth, j = 1, i + 1
                while depth:
                    depth += {tok.type: 1, close: -1}.get(children[j].type, 0)
                    j += 1
                inner = children[i + 1:j - 1]
                words = " ".join(self.plain(inner).split())
                if tok.type == "link_open":
                    kind, where = self.target(tok.attrs["href"])
                    if kind == "ref":
                        pieces.append((":ref:`%s <%s>`" % (escape(words).replace("<", "\\<"), where), True))
                    else:
                        pieces.append(("`%s <%s>`__" % (escape(words).replace("<", "\\<"), where), True))
                else:
                    mark = "**" if tok.type == "strong_open" else "*"
                    pieces.append((mark + escape(words) + mark, True))
                i = j
                continue
            elif tok.type == "html_inline":
                pass
            elif tok.type == "image":
                pieces.append((escape(tok.content), False))
            else:
                raise SystemExit("%s.md: inline %s is not converted: extend scripts/docsite.py" % (self.name, tok.type))
            i += 1
        out = ""
        for n, (text, markup) in enumerate(pieces):
            if markup:
                if out and out[-1] not in OPENERS:
                    out += "\\ "
                out += text
                nxt = pieces[n + 1][0] if n + 1 < len(pieces) else ""
                if nxt and nxt[0] not in CLOSERS:
                    out += "\\ "
            else:
                out += text
        return out

    # --- blocks ---------------------------------------------------------------
    def convert(self):
        tokens = self.parser.parse(self.text)
        lines = [".. _%s:" % label(self.name), ""]
        self.blocks(tokens, 0, len(tokens), lines, top=True)
        while lines and lines[-1] == "":
            lines.pop()
        return "\n".join(lines) + "\n"

    @staticmethod
    def close_of(tokens, i):
        depth, j = 0, i
        while True:
            depth += tokens[j].nesting
            if depth == 0:
                return j
            j += 1

    def blocks(self, tokens, start, end, lines, top=False):
        i = start
        while i < end:
            tok = tokens[i]
            if tok.type == "heading_open":
                text = self.inline(tokens[i + 1].children)
                anchor = slug(self.plain(tokens[i + 1].children))
                count = self.anchors.get(anchor, 0)
                self.anchors[anchor] = count + 1
                if count:
                    anchor = "%s-%d" % (anchor, count)
                level = int(tok.tag[1])
                if level > 1:
                    lines += [".. _%s:" % label(self.name, anchor), ""]
                underline = HEADINGS[level] * max(width(text), 3)
                lines += ([underline] if level == 1 else []) + [text, underline, ""]
                i += 3
            elif tok.type == "paragraph_open":
                lines += self.inline(tokens[i + 1].children).split("\n") + [""]
                i += 3
            elif tok.type in ("fence", "code_block"):
                info = (tok.info or "").strip().split(" ")[0].lower()
                lines += [".. code-block:: %s" % LANGUAGES.get(info, "text"), ""]
                lines += [("   " + line) if line else "" for line in tok.content.rstrip("\n").split("\n")]
                lines.append("")
                i += 1
            elif tok.type in ("bullet_list_open", "ordered_list_open"):
                close = self.close_of(tokens, i)
                self.a_list(tokens, i, close, lines)
                i = close + 1
            elif tok.type == "table_open":
                close = self.close_of(tokens, i)
                self.table(tokens, i, close, lines)
                i = close + 1
            elif tok.type == "blockquote_open":
                close = self.close_of(tokens, i)
                inner = []
                self.blocks(tokens, i + 1, close, inner)
                lines += [("   " + line) if line else "" for line in inner]
                i = close + 1
            elif tok.type == "hr":
                lines += ["----", ""]
                i += 1
            elif tok.type == "html_block":
                lines += [".."] + ["   " + line for line in tok.content.rstrip("\n").split("\n")] + [""]
                i += 1
            else:
                raise SystemExit("%s.md: block %s is not converted: extend scripts/docsite.py" % (self.name, tok.type))

    def a_list(self, tokens, start, end, lines):
        ordered = tokens[start].type == "ordered_list_open"
        number = int(tokens[start].attrs.get("start", 1) or 1) if ordered else None
        i = start + 1
        while i < end:
            close = self.close_of(tokens, i)
            inner = []
            self.blocks(tokens, i + 1, close, inner)
            while inner and inner[-1] == "":
                inner.pop()
            bullet = "%d. " % number if ordered else "- "
            pad = " " * len(bullet)
            lines.append(bullet + inner[0])
            lines += [(pad + line) if line else "" for line in inner[1:]]
            if ordered:
                number += 1
            i = close + 1
        lines.append("")

    def table(self, tokens, start, end, lines):
        rows, row = [], None
        for i in range(start, end):
            tok = tokens[i]
            if tok.type == "tr_open":
                row = []
            elif tok.type == "tr_close":
                rows.append(row)
            elif tok.type == "inline":
                row.append(self.inline(tok.children).replace("\n", " "))
        lines += [".. list-table::", "   :header-rows: 1", ""]
        for row in rows:
            for n, cell in enumerate(row):
                lines.append(("   * - " if n == 0 else "     - ") + cell if cell else
                             ("   * -" if n == 0 else "     -"))
        lines.append("")


def generate():
    """{rst path: text} for every guide."""
    out = {}
    for name in GUIDES:
        with open(os.path.join(DOCS, name + ".md"), encoding="utf-8") as handle:
            text = handle.read()
        out[os.path.join(OUT, name + ".rst")] = Converter(name, text).convert()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated guide is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in sorted(generate().items()):
        current = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                current = handle.read()
        if current == text:
            continue
        rel = os.path.relpath(path, REPO)
        if args.check:
            stale.append(rel)
            sys.stdout.writelines(difflib.unified_diff((current or "").splitlines(True), text.splitlines(True),
                                                       rel + " (committed)", rel + " (from the .md)", n=1))
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            print("docsite: wrote %s" % rel)
    if stale:
        print("docsite: stale: %s (run python scripts/docsite.py)" % ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
