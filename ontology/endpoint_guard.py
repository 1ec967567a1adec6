"""Which queries would make the endpoint's store fetch a remote resource (SSRF), and refusing them.

Both stores dereference ``SERVICE <iri>`` themselves (rdflib with urllib, Oxigraph with its own
HTTP client), so a query could make the server reach any address it can: a lab network's
internal services, cloud metadata at 169.254.169.254, a port scan. ``refusal`` finds every
``SERVICE`` and every dataset clause (``FROM``, ``FROM NAMED``: the registry is one default graph,
and a dataset-loading store would fetch them) and returns the reason to refuse the query, unless a
``SERVICE`` IRI starts with one of the operator's allowed prefixes. ``LOAD`` is an update, which
the endpoint refuses before any query is read.

The scan runs on the query's tokens, after the ``\\uXXXX`` escapes both parsers expand first, so
that ``SERVICE`` inside a string, an IRI or a comment is not a keyword and ``\\u0053ERVICE`` is.
It is stricter than the grammar: a ``SERVICE`` it cannot resolve to an absolute IRI (a variable,
an unknown prefix) is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import urljoin, urlsplit

__all__ = ["allowed_prefix", "refusal", "variables"]

_ESCAPE = re.compile(r"\\u([0-9A-Fa-f]{4})|\\U([0-9A-Fa-f]{8})")
# Comments, IRIs, variables, strings, language tags (skipped or kept whole); then names. A string
# that is not closed runs as far as it can (the parser refuses the query anyway): were it not
# matched, the scan would restart at every quote inside it, in time quadratic in the query.
_TOKENS = re.compile(
    r"""(?P<skip>\#[^\n]*|[?$]\w+|@[A-Za-z]+(?:-[A-Za-z0-9]+)*
       |\"\"\"(?:[^"\\]|\\.|"(?!""))*+(?:\"\"\")?|'''(?:[^'\\]|\\.|'(?!''))*+(?:''')?
       |"(?:[^"\\\n]|\\.)*+"?|'(?:[^'\\\n]|\\.)*+'?)
      |(?P<iri><[^<>"{}|^`\\\x00-\x20]*>)
      |(?P<word>[A-Za-z_][\w.-]*(?::[\w.:%-]*)?|:[\w.:%-]*)""",
    re.VERBOSE,
)


def _unescaped(query: str) -> str:
    """The query as the SPARQL parsers read it: ``\\uXXXX`` and ``\\UXXXXXXXX`` expanded."""

    def code(match: re.Match[str]) -> str:
        try:
            return chr(int(match.group(1) or match.group(2), 16))
        except ValueError:  # past U+10FFFF: the parser refuses the query, so do we (below)
            return "\ufffd"

    return _ESCAPE.sub(code, query)


def _tokens(query: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of each IRI, word and variable; comments, strings and tags are left out."""
    for match in _TOKENS.finditer(query):
        kind, text = match.lastgroup or "", match.group()
        if kind == "skip":
            if text[0] in "?$":
                yield "var", text
            continue
        yield kind, text


def _iri(kind: str, text: str, prefixes: dict[str, str], base: str) -> str | None:
    """An IRI token or prefixed name as an absolute IRI, or None when it is not one."""
    if kind == "iri":
        iri = urljoin(base, text[1:-1]) if base else text[1:-1]
    elif kind == "word" and ":" in text:
        prefix, _, local = text.partition(":")
        if prefix not in prefixes:
            return None
        iri = prefixes[prefix] + local
    else:
        return None
    return iri if urlsplit(iri).scheme else None


def allowed_prefix(prefix: str) -> str:
    """An allow-list entry, checked: an absolute http(s) URL; a bare host gets its ``/``.

    ``http://lab:3030`` would also match ``http://lab:30301`` and ``http://lab:3030.evil.net``
    as a plain prefix, hence the slash.
    """
    parts = urlsplit(prefix)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{prefix}' is not an http(s) URL prefix, e.g. http://lab-host:3030/")
    return prefix if parts.path else prefix + "/"


def refusal(query: str, allow: Sequence[str] = ()) -> str | None:
    """Why ``query`` may not run here (it would fetch a remote resource), or None if it may."""
    tokens = list(_tokens(_unescaped(query)))
    prefixes: dict[str, str] = {}
    base = ""
    for at, (kind, text) in enumerate(tokens):
        keyword = text.upper() if kind == "word" else ""
        following = tokens[at + 1 : at + 4]
        if keyword == "BASE" and following and following[0][0] == "iri":
            base = following[0][1][1:-1]
        elif keyword == "PREFIX" and len(following) >= 2 and following[1][0] == "iri":
            prefixes[following[0][1].removesuffix(":")] = following[1][1][1:-1]
        elif keyword == "FROM":
            return (
                "FROM and FROM NAMED are refused: the registry is one default graph, and a store "
                "that loads a dataset would fetch them from the network; drop the clause"
            )
        elif keyword == "SERVICE":
            reason = _service_refusal(following, prefixes, base, allow)
            if reason:
                return reason
    return None


def _service_refusal(
    following: Iterable[tuple[str, str]], prefixes: dict[str, str], base: str, allow: Sequence[str]
) -> str | None:
    rest = [t for t in following if t[1].upper() != "SILENT"]
    iri = _iri(*rest[0], prefixes, base) if rest else None
    if iri is not None and any(iri.startswith(prefix) for prefix in allow):
        return None
    if not allow:
        return (
            "SERVICE is refused: this endpoint does not query other endpoints (the server would "
            "fetch the URL for you); start it with --allow-service URL_PREFIX to permit some"
        )
    named = f"<{iri[:200]}>" if iri else "a SERVICE whose IRI is not written out"
    return (
        f"SERVICE {named} is refused: it is not under an allowed prefix "
        f"({', '.join(allow)}); ask the operator to add it with --allow-service"
    )


def variables(query: str) -> set[str]:
    """The names of the variables a query mentions (``?x`` and ``$x`` alike), outside strings,
    IRIs and comments."""
    return {text[1:] for kind, text in _tokens(_unescaped(query)) if kind == "var"}
