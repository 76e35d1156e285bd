"""The readable page of an OpenAPI 3 document (``/api/v1/docs``), rendered on the server.

:func:`build_docs` turns any document :func:`webapp.openapi.openapi_document` returns into
view objects for ``templates/api_docs.html``: Markdown descriptions as HTML (raw HTML off,
links only http(s) or relative), schemas as property tables with ``$ref`` links to their
section, a JSON example of every schema (the document's ``example``/``examples`` when it has
them, else made up from types, formats, enums and bounds) and a ``curl`` line per operation.

Nothing here emits a script or a style: the page lives under ``style-src 'self'`` and
``script-src 'self'``, which is why Redoc and Swagger UI (both inject inline styles) are not
used.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from markdown_it import MarkdownIt
from markupsafe import Markup, escape

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TOKEN_VARIABLE = "TOKEN"
#: How deep inline (not ``$ref``) objects are drawn and examples are made up.
MAX_DEPTH = 8
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):", re.IGNORECASE)
_NOT_ID = re.compile(r"[^A-Za-z0-9_.-]+")


class _SafeMarkdown(MarkdownIt):
    """CommonMark without raw HTML or images, whose links go only to http(s) or relative
    addresses (no ``javascript:``, ``data:``, ``mailto:``...)."""

    def __init__(self) -> None:
        super().__init__("commonmark", {"html": False, "linkify": False, "typographer": False})
        # An image would load from wherever its author likes (and break img-src 'self').
        self.disable("image")

    def validateLink(self, url: str) -> bool:
        url = url.strip()
        scheme = _SCHEME.match(url)
        if scheme is not None:
            return scheme.group(1).lower() in ("http", "https")
        # Relative; a colon before the first "/" would be a scheme to some browser
        # ("java%09script:"): not a link.
        return ":" not in re.split(r"[/?#]", url, maxsplit=1)[0]


_MARKDOWN = _SafeMarkdown()


def markdown(text: object) -> Markup:
    """Block Markdown (paragraphs, lists, code) as safe HTML; empty for no text."""
    if not isinstance(text, str) or not text.strip():
        return Markup("")
    return Markup(_MARKDOWN.render(text))


def markdown_inline(text: object) -> Markup:
    """One line of Markdown (a summary) as safe HTML without the paragraph."""
    if not isinstance(text, str) or not text.strip():
        return Markup("")
    return Markup(_MARKDOWN.renderInline(text))


def anchor_of(*parts: str) -> str:
    """An HTML id from ``parts`` (``"get", "/users/{user_id}"`` -> ``get-users-user_id``)."""
    joined = "-".join(part.strip("/") for part in parts if part.strip("/"))
    return _NOT_ID.sub("-", joined).strip("-") or "x"


def json_pointer(*tokens: str) -> str:
    """The JSON pointer (RFC 6901) of ``tokens``: ``("paths", "/a")`` -> ``/paths/~1a``."""
    return "".join("/" + token.replace("~", "~0").replace("/", "~1") for token in tokens)


def resolve_pointer(document: Mapping[str, Any], ref: str) -> tuple[Any, str]:
    """The object a local ``$ref`` (``#/components/schemas/X``) points at, and its pointer.

    Raises ``KeyError`` naming the reference when it is not local or leads nowhere.
    """
    if not ref.startswith("#"):
        raise KeyError(f"only local references are rendered, not {ref!r}")
    target: Any = document
    pointer = unquote(ref[1:])
    for token in pointer.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping) and key in target:
            target = target[key]
        elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        else:
            raise KeyError(f"$ref {ref!r} leads nowhere")
    return target, pointer


# ----------------------------------------------------------------------------- view objects


@dataclass(frozen=True)
class Constraint:
    label: str  # "minimum", "pattern", "default"...
    value: str  # as written in JSON


@dataclass(frozen=True)
class SchemaView:
    """What a schema says, for people: its type (with links), its properties as rows."""

    type: Markup
    nullable: bool
    description: Markup
    enum: tuple[str, ...]  # each value as JSON
    constraints: tuple[Constraint, ...]
    properties: tuple[Property, ...]
    #: Where the listed properties sit: "" (the value itself), "each item", "each value"...
    properties_of: str
    #: What keys other than the listed properties may hold, as a sentence ("" if unsaid).
    other_keys: Markup
    variants: tuple[tuple[Markup, SchemaView], ...]  # inline oneOf/anyOf/allOf members


@dataclass(frozen=True)
class Property:
    name: str
    type: Markup
    required: bool
    nullable: bool
    description: Markup
    enum: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    nested: SchemaView | None  # the properties of an inline object (not of a $ref)


@dataclass(frozen=True)
class Example:
    text: str  # indented JSON, or the document's own text for a non-JSON media type
    #: JSON pointer (in the document) of the schema a JSON example is of; "" for text.
    pointer: str
    from_document: bool  # the document's own example, not a made-up one

    @property
    def is_json(self) -> bool:
        return bool(self.pointer)


@dataclass(frozen=True)
class MediaType:
    media_type: str
    schema: SchemaView | None
    example: Example | None


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # path, query, header, cookie
    type: Markup
    required: bool
    deprecated: bool
    description: Markup
    enum: tuple[str, ...]
    constraints: tuple[Constraint, ...]


@dataclass(frozen=True)
class Header:
    name: str
    type: Markup
    description: Markup


@dataclass(frozen=True)
class RequestBody:
    required: bool
    description: Markup
    content: tuple[MediaType, ...]


@dataclass(frozen=True)
class Response:
    status: str
    summary: Markup  # the description's first line
    description: Markup  # the whole description when it is longer than that line
    headers: tuple[Header, ...]
    content: tuple[MediaType, ...]

    @property
    def success(self) -> bool:
        return self.status.startswith("2")


@dataclass(frozen=True)
class SecurityNeed:
    """One way to be let in: all of ``schemes`` (name, anchor) together."""

    schemes: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Operation:
    anchor: str
    method: str
    path: str
    url: str  # the server's base and the path
    operation_id: str
    summary: Markup
    description: Markup
    deprecated: bool
    #: Ways to be let in; empty when the operation takes no credentials at all.
    security: tuple[SecurityNeed, ...]
    anonymous_allowed: bool
    parameters: tuple[Parameter, ...]
    request_body: RequestBody | None
    responses: tuple[Response, ...]
    curl: str

    @property
    def needs_auth(self) -> bool:
        return bool(self.security) and not self.anonymous_allowed


@dataclass(frozen=True)
class TagGroup:
    name: str
    anchor: str
    description: Markup
    operations: tuple[Operation, ...]  # every operation with this tag, for the contents
    sections: tuple[Operation, ...]  # those whose section is drawn here (their first tag)


@dataclass(frozen=True)
class SecurityScheme:
    name: str
    anchor: str
    kind: Markup  # what to send, in a sentence
    description: Markup


@dataclass(frozen=True)
class Component:
    name: str
    anchor: str
    view: SchemaView
    example: Example


@dataclass(frozen=True)
class ApiDocs:
    title: str
    version: str
    openapi: str
    description: Markup
    base_url: str
    default_security: tuple[SecurityNeed, ...]
    tags: tuple[TagGroup, ...]
    security_schemes: tuple[SecurityScheme, ...]
    schemas: tuple[Component, ...]
    operations: tuple[Operation, ...]


# ----------------------------------------------------------------------------- examples


class _Cycle(Exception):
    """A ``$ref`` met again inside itself: the example leaves that branch out."""


_FORMAT_EXAMPLES = {
    "date": "2026-11-30",
    "date-time": "2026-11-30T08:00:00Z",
    "time": "08:00:00",
    "email": "listener@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uri-reference": "/api/v1/health",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "3f2c6b1e-8d4a-4c1e-9b7a-2f5d8e6a1c30",
    "byte": "ZXhhbXBsZQ==",
    "password": "********",
}


def example_of(
    schema: Any, document: Mapping[str, Any], *, name: str = "", _stack: tuple[str, ...] = ()
) -> Any:
    """A JSON value that fits ``schema`` (an OpenAPI 3.0/3.1 schema object).

    The schema's own ``example``, ``examples[0]``, ``const``, ``default`` or first enum value
    when it has one; else a value made up from its type, format, bounds and pattern (tried,
    not guaranteed). A ``$ref`` seen again inside itself is left out (an empty array, an
    omitted optional property, ``null`` where allowed), so cyclic schemas end.
    """
    if not isinstance(schema, Mapping) or len(_stack) > MAX_DEPTH * 4:
        return None
    if "$ref" in schema:
        ref = str(schema["$ref"])
        if ref in _stack:
            raise _Cycle(ref)
        try:
            target, _ = resolve_pointer(document, ref)
        except KeyError:
            return None
        return example_of(target, document, name=name, _stack=(*_stack, ref))
    if "example" in schema:
        return copy.deepcopy(schema["example"])
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        return copy.deepcopy(examples[0])
    for keyword in ("const", "default"):
        if keyword in schema:
            return copy.deepcopy(schema[keyword])
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return copy.deepcopy(next((value for value in enum if value is not None), enum[0]))
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        return _example_of_all(schema, document, name, _stack)
    for keyword in ("oneOf", "anyOf"):
        variants = schema.get(keyword)
        if isinstance(variants, list) and variants:
            for variant in _non_null_first(variants):
                try:
                    return example_of(variant, document, name=name, _stack=_stack)
                except _Cycle:
                    continue
            return None
    kinds = _types(schema)
    if not kinds:
        return None
    kind = kinds[0]
    if kind == "object":
        return _example_object(schema, document, _stack)
    if kind == "array":
        return _example_array(schema, document, name, _stack)
    if kind == "string":
        return _example_string(schema, name)
    if kind == "integer":
        return int(_example_number(schema, 1))
    if kind == "number":
        return _example_number(schema, 0.5)
    if kind == "boolean":
        return True
    return None


def _example_of_all(
    schema: Mapping[str, Any], document: Mapping[str, Any], name: str, stack: tuple[str, ...]
) -> Any:
    parts = [example_of(part, document, name=name, _stack=stack) for part in schema["allOf"]]
    siblings = {key: value for key, value in schema.items() if key != "allOf"}
    if _types(siblings) or "properties" in siblings:
        parts.append(example_of(siblings, document, name=name, _stack=stack))
    if all(isinstance(part, dict) for part in parts):
        merged: dict[str, Any] = {}
        for part in parts:
            merged |= part
        return merged
    return parts[-1]


def _non_null_first(variants: Sequence[Any]) -> list[Any]:
    def is_null(variant: Any) -> bool:
        return isinstance(variant, Mapping) and variant.get("type") == "null"

    return [v for v in variants if not is_null(v)] + [v for v in variants if is_null(v)]


def _example_object(
    schema: Mapping[str, Any], document: Mapping[str, Any], stack: tuple[str, ...]
) -> dict[str, Any]:
    required = set(schema.get("required") or ())
    value: dict[str, Any] = {}
    for key, subschema in (schema.get("properties") or {}).items():
        try:
            value[key] = example_of(subschema, document, name=key, _stack=stack)
        except _Cycle:
            if key in required and _nullable(subschema):
                value[key] = None
            elif key in required:
                raise
    extra = schema.get("additionalProperties")
    if not value and isinstance(extra, Mapping):
        with contextlib.suppress(_Cycle):
            value["key"] = example_of(extra, document, name="key", _stack=stack)
    return value


def _example_array(
    schema: Mapping[str, Any], document: Mapping[str, Any], name: str, stack: tuple[str, ...]
) -> list[Any]:
    if schema.get("maxItems") == 0:
        return []
    try:
        item = example_of(schema.get("items", {}), document, name=_singular(name), _stack=stack)
    except _Cycle:
        return []
    count = max(int(schema.get("minItems") or 1), 1)
    return [copy.deepcopy(item) for _ in range(count)]


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") and len(name) > 1 else name


def _example_string(schema: Mapping[str, Any], name: str) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMAT_EXAMPLES:
        return _FORMAT_EXAMPLES[fmt]
    stem = name.removesuffix("_id") if name else ""
    candidates = [f"{stem}-42" if name.endswith("_id") else name.replace("_", " ")]
    candidates += ["example", "abc123", "A1", "a", "0"]
    pattern = schema.get("pattern")
    shortest = int(schema.get("minLength") or 0)
    longest = schema.get("maxLength")
    if isinstance(pattern, str):
        candidates.append(_string_matching(pattern))
    for candidate in candidates:
        if not candidate:
            continue
        text = candidate + "x" * max(shortest - len(candidate), 0)
        if isinstance(longest, int):
            text = text[:longest]
        if not isinstance(pattern, str) or _matches(pattern, text):
            return text
    return candidates[0] or "string"


_CATEGORY_CHARS = {
    "CATEGORY_DIGIT": "0123456789",
    "CATEGORY_WORD": "abcdefghijklmnopqrstuvwxyz",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_DIGIT": "abcdefghijklmnopqrstuvwxyz",
    "CATEGORY_NOT_WORD": "-",
    "CATEGORY_NOT_SPACE": "abcdefghijklmnopqrstuvwxyz",
}


def _string_matching(pattern: str) -> str:
    """A string ``pattern`` (a regular expression) may match: the shortest repetitions,
    walking character ranges so ``[A-Z]{2}[0-9]{3}`` gives ``AB234``; "" if it cannot tell.

    Python's own regex parser reads the pattern: ECMA patterns of OpenAPI documents are
    mostly the common subset of both.
    """
    try:
        from re import _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(pattern)
    except (ImportError, re.error, RecursionError):
        return ""
    counter = [0]

    def pick(chars: str) -> str:
        counter[0] += 1
        return chars[(counter[0] - 1) % len(chars)]

    def in_class(items: list[tuple[Any, Any]]) -> str:
        if items and str(items[0][0]) == "NEGATE":
            for ch in "aA0_-x":
                if not any(_class_item_matches(op, av, ch) for op, av in items[1:]):
                    return ch
            return ""
        op, av = items[0]
        name = str(op)
        if name == "LITERAL":
            return chr(av)
        if name == "RANGE":
            return pick("".join(chr(c) for c in range(av[0], min(av[1], av[0] + 25) + 1)))
        if name == "CATEGORY":
            return pick(_CATEGORY_CHARS.get(str(av), "a"))
        return "a"

    def walk(nodes: Any, depth: int = 0) -> str:
        if depth > MAX_DEPTH * 2:
            raise RecursionError
        out = []
        for op, av in nodes:
            name = str(op)
            if name == "LITERAL":
                out.append(chr(av))
            elif name == "NOT_LITERAL":
                out.append("a" if chr(av) != "a" else "b")
            elif name == "ANY":
                out.append(pick("abcdefghij"))
            elif name == "IN":
                out.append(in_class(av))
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                low, _, sub = av
                out.append("".join(walk(sub, depth + 1) for _ in range(low)))
            elif name in ("SUBPATTERN", "ATOMIC_GROUP"):
                out.append(walk(av[-1], depth + 1))
            elif name == "BRANCH":
                out.append(walk(av[1][0], depth + 1))
            elif name == "CATEGORY":
                out.append(pick(_CATEGORY_CHARS.get(str(av), "a")))
            # AT (anchors), ASSERT, ASSERT_NOT: nothing to write
        return "".join(out)

    try:
        return walk(parsed)
    except (RecursionError, TypeError, ValueError, IndexError):
        return ""


def _class_item_matches(op: Any, av: Any, ch: str) -> bool:
    name = str(op)
    if name == "LITERAL":
        return bool(chr(av) == ch)
    if name == "RANGE":
        return bool(av[0] <= ord(ch) <= av[1])
    if name == "CATEGORY":
        return ch in _CATEGORY_CHARS.get(str(av), "") or (
            str(av) == "CATEGORY_WORD" and (ch.isalnum() or ch == "_")
        )
    return True  # unknown: assume it matches, so the character is not picked


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:  # an ECMA-only pattern: keep the first candidate
        return True


def _example_number(schema: Mapping[str, Any], preferred: float) -> float:
    value = preferred
    lowest, highest = schema.get("minimum"), schema.get("maximum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):  # 3.1: a number
        lowest = schema["exclusiveMinimum"] + 1
    elif schema.get("exclusiveMinimum") is True and lowest is not None:
        lowest = lowest + 1
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        highest = schema["exclusiveMaximum"] - 1
    elif schema.get("exclusiveMaximum") is True and highest is not None:
        highest = highest - 1
    if isinstance(lowest, int | float) and value < lowest:
        value = lowest
    if isinstance(highest, int | float) and value > highest:
        value = highest
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        value = step * max(round(value / step), 1)
    return value


def _types(schema: Mapping[str, Any]) -> list[str]:
    """The schema's types other than null, inferred from its keywords when it has no type."""
    kind = schema.get("type")
    if isinstance(kind, str):
        kinds = [kind]
    elif isinstance(kind, list):
        kinds = [str(k) for k in kind]
    elif "properties" in schema or "additionalProperties" in schema:
        kinds = ["object"]
    elif "items" in schema:
        kinds = ["array"]
    else:
        kinds = []
    return [k for k in kinds if k != "null"]


def _nullable(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    kind = schema.get("type")
    if schema.get("nullable") is True or (isinstance(kind, list) and "null" in kind):
        return True
    variants = [*(schema.get("oneOf") or ()), *(schema.get("anyOf") or ())]
    return any(isinstance(v, Mapping) and v.get("type") == "null" for v in variants)


# ----------------------------------------------------------------------------- the builder


def build_docs(document: Mapping[str, Any], *, origin: str = "") -> ApiDocs:
    """The view of ``document`` (an OpenAPI 3.0/3.1 document) for ``api_docs.html``.

    ``origin`` (``https://host``) goes before a relative server URL in the ``curl`` lines.
    """
    return _Builder(document, origin).build()


class _Builder:
    def __init__(self, document: Mapping[str, Any], origin: str) -> None:
        self.document = document
        components = document.get("components") or {}
        self.schemas: Mapping[str, Any] = components.get("schemas") or {}
        self.schemes: Mapping[str, Any] = components.get("securitySchemes") or {}
        self.base_url = _server_url(document)
        self.origin = origin.rstrip("/")
        self.anchors: set[str] = set()

    def build(self) -> ApiDocs:
        info = self.document.get("info") or {}
        default_security = self._security(self.document.get("security") or [])
        operations = list(self._operations())
        return ApiDocs(
            title=str(info.get("title") or "API"),
            version=str(info.get("version") or ""),
            openapi=str(self.document.get("openapi") or ""),
            description=markdown(info.get("description")),
            base_url=self.base_url,
            default_security=default_security,
            tags=self._tags(operations),
            security_schemes=tuple(
                self._security_scheme(name, scheme) for name, scheme in self.schemes.items()
            ),
            schemas=tuple(
                Component(
                    name=name,
                    anchor=schema_anchor(name),
                    view=self._view(schema, follow_refs=False),
                    example=self._example(schema, json_pointer("components", "schemas", name)),
                )
                for name, schema in self.schemas.items()
            ),
            operations=tuple(op for op, _ in operations),
        )

    # -- operations

    def _operations(self) -> Iterator[tuple[Operation, list[str]]]:
        for path, item in (self.document.get("paths") or {}).items():
            item_pointer = json_pointer("paths", path)
            if "$ref" in item:
                item, item_pointer = self._resolve(item, item_pointer)
            shared = item.get("parameters") or []
            for method in HTTP_METHODS:
                if isinstance(item.get(method), Mapping):
                    yield self._operation(path, method, item[method], shared, item_pointer)

    def _operation(
        self,
        path: str,
        method: str,
        raw: Mapping[str, Any],
        shared: Sequence[Any],
        item_pointer: str,
    ) -> tuple[Operation, list[str]]:
        pointer = f"{item_pointer}/{method}"
        security_requirements = raw.get("security", self.document.get("security") or [])
        security = self._security(security_requirements)
        parameters = self._parameters(shared, raw.get("parameters") or [])
        request_body = None
        if "requestBody" in raw:
            body, body_pointer = self._resolve(raw["requestBody"], f"{pointer}/requestBody")
            request_body = RequestBody(
                required=bool(body.get("required")),
                description=markdown(body.get("description")),
                content=self._content(body.get("content") or {}, body_pointer),
            )
        responses = []
        for status, value in (raw.get("responses") or {}).items():
            response, response_pointer = self._resolve(
                value, f"{pointer}/responses/{json_pointer(str(status))[1:]}"
            )
            responses.append(
                Response(
                    status=str(status),
                    summary=markdown_inline(_first_line(response.get("description"))),
                    description=_more_than_a_line(response.get("description")),
                    headers=self._headers(response.get("headers") or {}),
                    content=self._content(
                        response.get("content") or {},
                        response_pointer,
                        # An error body is one schema again and again (Error): its link
                        # and example, not its table, in every operation.
                        expand_refs=not str(status).startswith(("4", "5", "default")),
                    ),
                )
            )
        operation_id = str(raw.get("operationId") or "")
        anchor = self._unique(anchor_of(operation_id) if operation_id else anchor_of(method, path))
        operation = Operation(
            anchor=anchor,
            method=method,
            path=path,
            url=self.base_url + path,
            operation_id=operation_id,
            summary=markdown_inline(raw.get("summary")),
            description=markdown(raw.get("description")),
            deprecated=bool(raw.get("deprecated")),
            security=security,
            anonymous_allowed=any(not need.schemes for need in security),
            parameters=tuple(parameters),
            request_body=request_body,
            responses=tuple(responses),
            curl=self._curl(method, path, raw, shared, security),
        )
        tags = [str(tag) for tag in raw.get("tags") or ()]
        return operation, tags

    def _unique(self, anchor: str) -> str:
        candidate, n = anchor, 1
        while candidate in self.anchors:
            n += 1
            candidate = f"{anchor}-{n}"
        self.anchors.add(candidate)
        return candidate

    def _resolve(self, value: Any, pointer: str) -> tuple[Mapping[str, Any], str]:
        """Follow a (non-schema) ``$ref`` chain; a broken one gives an empty object."""
        for _ in range(MAX_DEPTH):
            if not (isinstance(value, Mapping) and "$ref" in value):
                break
            try:
                value, pointer = resolve_pointer(self.document, str(value["$ref"]))
            except KeyError:
                return {}, pointer
        return (value if isinstance(value, Mapping) else {}), pointer

    def _merged_parameters(
        self, shared: Sequence[Any], own: Sequence[Any]
    ) -> list[Mapping[str, Any]]:
        by_key: dict[tuple[str, str], Mapping[str, Any]] = {}
        for value in [*shared, *own]:  # the operation's own win over the path's
            parameter, _ = self._resolve(value, "")
            by_key[(str(parameter.get("name")), str(parameter.get("in")))] = parameter
        return list(by_key.values())

    def _parameters(self, shared: Sequence[Any], own: Sequence[Any]) -> list[Parameter]:
        views = []
        for parameter in self._merged_parameters(shared, own):
            schema = parameter.get("schema") or _media_schema(parameter.get("content"))
            views.append(
                Parameter(
                    name=str(parameter.get("name")),
                    location=str(parameter.get("in")),
                    type=self._type_label(schema),
                    required=bool(parameter.get("required")),
                    deprecated=bool(parameter.get("deprecated")),
                    description=markdown(parameter.get("description")),
                    enum=_enum(schema),
                    constraints=_constraints(schema),
                )
            )
        return views

    def _headers(self, headers: Mapping[str, Any]) -> tuple[Header, ...]:
        views = []
        for name, value in headers.items():
            header, _ = self._resolve(value, "")
            views.append(
                Header(
                    name=str(name),
                    type=self._type_label(header.get("schema") or {}),
                    description=markdown(header.get("description")),
                )
            )
        return tuple(views)

    def _content(
        self, content: Mapping[str, Any], pointer: str, *, expand_refs: bool = True
    ) -> tuple[MediaType, ...]:
        """The media types of a body; ``expand_refs``: a ``$ref`` schema's properties are
        listed here too, else it is a link to its section."""
        media_types = []
        for media_type, media in content.items():
            media_pointer = f"{pointer}/content/{json_pointer(media_type)[1:]}"
            schema = media.get("schema")
            example = None
            if _is_json(media_type):
                example = self._media_example(media, f"{media_pointer}/schema")
            elif isinstance(media.get("example"), str):  # an M3U or HTML text, shown as is
                example = Example(media["example"], "", from_document=True)
            media_types.append(
                MediaType(
                    media_type=str(media_type),
                    schema=None if schema is None else self._view(schema, follow_refs=expand_refs),
                    example=example,
                )
            )
        return tuple(media_types)

    def _media_example(self, media: Mapping[str, Any], schema_pointer: str) -> Example | None:
        if "example" in media:
            return Example(_dump(media["example"]), schema_pointer, from_document=True)
        examples = media.get("examples")
        if isinstance(examples, Mapping) and examples:
            first, _ = self._resolve(next(iter(examples.values())), "")
            if "value" in first:
                return Example(_dump(first["value"]), schema_pointer, from_document=True)
        if "schema" not in media:
            return None
        return self._example(media["schema"], schema_pointer)

    def _example(self, schema: Any, pointer: str) -> Example:
        try:
            value = example_of(schema, self.document)
        except _Cycle:
            value = None
        own = isinstance(schema, Mapping) and ("example" in schema or "examples" in schema)
        return Example(_dump(value), pointer, from_document=own)

    # -- curl

    def _curl(
        self,
        method: str,
        path: str,
        raw: Mapping[str, Any],
        shared: Sequence[Any],
        security: tuple[SecurityNeed, ...],
    ) -> str:
        query = []
        headers = []
        for parameter in self._merged_parameters(shared, raw.get("parameters") or []):
            name, location = str(parameter.get("name")), parameter.get("in")
            value = self._parameter_example(parameter)
            if location == "path":
                path = path.replace("{" + name + "}", quote(_scalar(value), safe=""))
            elif location == "query" and parameter.get("required"):
                query.append(f"{quote(name)}={quote(_scalar(value), safe='')}")
            elif location == "header" and parameter.get("required"):
                headers.append(shlex.quote(f"{name}: {_scalar(value)}"))
        url = (self.origin if "://" not in self.base_url else "") + self.base_url + path
        if query:
            url += "?" + "&".join(query)
        first = "curl" + ("" if method == "get" else f" -X {method.upper()}")
        words = [f"{first} {shlex.quote(url)}"]
        need = next((need for need in security if need.schemes), None)
        if need is not None and not any(not n.schemes for n in security):
            for scheme_name, _ in need.schemes:
                words.append(self._credentials(scheme_name))
        words.extend(f"-H {header}" for header in headers)
        body = raw.get("requestBody")
        if body is not None:
            body, _ = self._resolve(body, "")
            content = body.get("content") or {}
            media_type = next((m for m in content if _is_json(m)), None)
            if media_type is not None:
                example = self._media_example(content[media_type], "")
                compact = json.dumps(json.loads(example.text)) if example else "{}"
                words.append(f"-H {shlex.quote('Content-Type: ' + media_type)}")
                words.append(f"-d {shlex.quote(compact)}")
        return " \\\n  ".join(words)

    def _parameter_example(self, parameter: Mapping[str, Any]) -> Any:
        if "example" in parameter:
            return parameter["example"]
        examples = parameter.get("examples")
        if isinstance(examples, Mapping) and examples:
            first, _ = self._resolve(next(iter(examples.values())), "")
            if "value" in first:
                return first["value"]
        schema = parameter.get("schema") or _media_schema(parameter.get("content"))
        try:
            return example_of(schema, self.document, name=str(parameter.get("name")))
        except _Cycle:
            return ""

    def _credentials(self, scheme_name: str) -> str:
        scheme = self.schemes.get(scheme_name) or {}
        kind = scheme.get("type")
        variable = "$" + TOKEN_VARIABLE
        if kind == "http" and str(scheme.get("scheme", "")).lower() == "basic":
            return '-u "$USERNAME:$PASSWORD"'
        if kind == "apiKey":
            name = re.sub(r"[^A-Za-z0-9_-]", "", str(scheme.get("name", "")))
            if scheme.get("in") == "cookie":
                return f'-b "{name}={variable}"'
            return f'-H "{name}: {variable}"'
        return f'-H "Authorization: Bearer {variable}"'

    # -- security and tags

    def _security(self, requirements: Sequence[Any]) -> tuple[SecurityNeed, ...]:
        needs = []
        for requirement in requirements:
            if isinstance(requirement, Mapping):
                needs.append(
                    SecurityNeed(tuple((str(n), security_anchor(str(n))) for n in requirement))
                )
        return tuple(needs)

    def _security_scheme(self, name: str, scheme: Mapping[str, Any]) -> SecurityScheme:
        scheme, _ = self._resolve(scheme, "")
        return SecurityScheme(
            name=name,
            anchor=security_anchor(name),
            kind=_scheme_sentence(scheme),
            description=markdown(scheme.get("description")),
        )

    def _tags(self, operations: list[tuple[Operation, list[str]]]) -> tuple[TagGroup, ...]:
        declared = {
            str(tag.get("name")): tag
            for tag in self.document.get("tags") or ()
            if isinstance(tag, Mapping)
        }
        order = list(declared)
        for _, tags in operations:
            order += [tag for tag in tags if tag not in order]
        if any(not tags for _, tags in operations):
            order.append("")  # operations without a tag
        groups = []
        for name in order:
            members = [op for op, tags in operations if name in tags or (not name and not tags)]
            if not members:
                continue
            here = [op for op, tags in operations if (tags[0] if tags else "") == name]
            groups.append(
                TagGroup(
                    name=name or "other",
                    anchor=self._unique(anchor_of("tag", name or "other")),
                    description=markdown((declared.get(name) or {}).get("description")),
                    operations=tuple(members),
                    sections=tuple(here),
                )
            )
        return tuple(groups)

    # -- schemas

    def _type_label(self, schema: Any, depth: int = 0) -> Markup:
        """``string (date)``, ``array of <a href=#schema-Track>Track</a>``, ``map of integer``."""
        if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
            return Markup("any")
        if "$ref" in schema:
            return self._ref_link(str(schema["$ref"]))
        for keyword, word in (("allOf", "all of"), ("oneOf", "one of"), ("anyOf", "any of")):
            variants = schema.get(keyword)
            if isinstance(variants, list) and variants:
                labels = [
                    self._type_label(v, depth + 1)
                    for v in variants
                    if not (isinstance(v, Mapping) and v.get("type") == "null")
                ]
                if len(labels) == 1:
                    return labels[0]
                return Markup("{} {}").format(word, Markup(", ").join(labels))
        kinds = _types(schema)
        if not kinds:
            return Markup("any")
        labels = []
        for kind in kinds:
            if kind == "array":
                item = self._type_label(schema.get("items", {}), depth + 1)
                labels.append(Markup("array of {}").format(item))
            elif kind == "object" and not schema.get("properties"):
                extra = schema.get("additionalProperties")
                if isinstance(extra, Mapping):
                    value = self._type_label(extra, depth + 1)
                    labels.append(Markup("map of {}").format(value))
                else:
                    labels.append(Markup("object"))
            elif isinstance(schema.get("format"), str):
                labels.append(Markup("{} ({})").format(kind, schema["format"]))
            else:
                labels.append(escape(kind))
        return Markup(" or ").join(labels)

    def _ref_link(self, ref: str) -> Markup:
        prefix = "#/components/schemas/"
        name = unquote(ref[len(prefix) :]) if ref.startswith(prefix) else ref
        if ref.startswith(prefix) and name in self.schemas:
            return Markup('<a href="#{}"><code>{}</code></a>').format(schema_anchor(name), name)
        return Markup("<code>{}</code>").format(name)

    def _view(
        self, schema: Any, *, follow_refs: bool, depth: int = 0, label: Markup | None = None
    ) -> SchemaView:
        """The view of ``schema``; ``follow_refs`` lists a ``$ref``'s properties too (a body
        that is a ``Playlist`` shows Playlist's table), else a ``$ref`` is only a link."""
        if not isinstance(schema, Mapping):
            schema = {}
        own = schema
        container, properties_of = self._container(schema, follow_refs)
        described = own
        if "$ref" in own and follow_refs:
            described, _ = self._resolve_schema(own)
        variants: list[tuple[Markup, SchemaView]] = []
        for keyword in ("oneOf", "anyOf", "allOf"):
            members = [
                variant
                for variant in own.get(keyword) or ()
                if isinstance(variant, Mapping) and variant.get("type") != "null"
            ]
            if len(members) > 1 and depth < MAX_DEPTH:  # one member: drawn as the schema
                for variant in members:
                    view = self._view(variant, follow_refs=follow_refs, depth=depth + 1)
                    variants.append((self._type_label(variant), view))
        properties: tuple[Property, ...] = ()
        other_keys = Markup("")
        if container is not None:
            properties = self._properties(container, depth)
            extra = container.get("additionalProperties")
            if extra is False:
                other_keys = Markup("No other properties.")
            elif isinstance(extra, Mapping) and extra:
                other_keys = Markup("Other properties: {}.").format(self._type_label(extra))
        return SchemaView(
            type=label if label is not None else self._type_label(own),
            nullable=_nullable(own),
            description=markdown(described.get("description")),
            enum=_enum(described),
            constraints=_constraints(described),
            properties=properties,
            properties_of=properties_of,
            other_keys=other_keys,
            variants=tuple(variants),
        )

    def _resolve_schema(self, schema: Mapping[str, Any]) -> tuple[Mapping[str, Any], int]:
        hops = 0
        while "$ref" in schema and hops < MAX_DEPTH:
            try:
                target, _ = resolve_pointer(self.document, str(schema["$ref"]))
            except KeyError:
                return {}, hops
            schema = target if isinstance(target, Mapping) else {}
            hops += 1
        return schema, hops

    def _container(
        self, schema: Mapping[str, Any], follow_refs: bool
    ) -> tuple[Mapping[str, Any] | None, str]:
        """The object schema whose properties to list for ``schema``, and where it sits:
        through array items ("each item") and map values ("each value"), and through one
        ``$ref`` chain at the top when ``follow_refs``."""
        where: list[str] = []
        for _ in range(MAX_DEPTH):
            if "$ref" in schema:
                if not follow_refs:
                    return None, ""
                schema, _ = self._resolve_schema(schema)
                follow_refs = False
                continue
            all_of = schema.get("allOf")
            if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], Mapping):
                schema = all_of[0]
                continue
            if schema.get("properties"):
                return schema, " of ".join(reversed(where))
            kinds = _types(schema)
            if "array" in kinds and isinstance(schema.get("items"), Mapping):
                where.append("each item")
                schema = schema["items"]
            elif "object" in kinds and isinstance(schema.get("additionalProperties"), Mapping):
                where.append("each value")
                schema = schema["additionalProperties"]
            else:
                return None, ""
        return None, ""

    def _properties(self, container: Mapping[str, Any], depth: int) -> tuple[Property, ...]:
        required = set(container.get("required") or ())
        rows = []
        for name, schema in (container.get("properties") or {}).items():
            schema = schema if isinstance(schema, Mapping) else {}
            nested = None
            inline, _ = self._container(schema, follow_refs=False)
            if inline is not None and depth < MAX_DEPTH:
                nested = self._view(schema, follow_refs=False, depth=depth + 1)
            rows.append(
                Property(
                    name=str(name),
                    type=self._type_label(schema),
                    required=name in required,
                    nullable=_nullable(schema),
                    description=markdown(schema.get("description")),
                    enum=_enum(schema),
                    constraints=_constraints(schema),
                    nested=nested,
                )
            )
        return tuple(rows)


def _first_line(text: object) -> str:
    return text.strip().splitlines()[0] if isinstance(text, str) and text.strip() else ""


def _more_than_a_line(text: object) -> Markup:
    if isinstance(text, str) and len(text.strip().splitlines()) > 1:
        return markdown(text)
    return Markup("")


def schema_anchor(name: str) -> str:
    return anchor_of("schema", name)


def security_anchor(name: str) -> str:
    return anchor_of("security", name)


def _server_url(document: Mapping[str, Any]) -> str:
    servers = document.get("servers") or [{}]
    server: Mapping[str, Any] = servers[0] if isinstance(servers[0], Mapping) else {}
    url = str(server.get("url") or "")
    variables: Mapping[str, Any] = server.get("variables") or {}
    for name, variable in variables.items():
        url = url.replace("{" + name + "}", str(variable.get("default", "")))
    return url.rstrip("/")


def _media_schema(content: Any) -> Any:
    if isinstance(content, Mapping) and content:
        return next(iter(content.values())).get("schema") or {}
    return {}


def _is_json(media_type: str) -> bool:
    essence = media_type.split(";")[0].strip().lower()
    return essence == "application/json" or essence.endswith("+json")


def _dump(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(_scalar(item) for item in value)
    return json.dumps(value)


def _enum(schema: Any) -> tuple[str, ...]:
    if not isinstance(schema, Mapping) or not isinstance(schema.get("enum"), list):
        return ()
    return tuple(json.dumps(value, ensure_ascii=False) for value in schema["enum"])


_CONSTRAINT_LABELS = (
    ("minimum", "minimum"),
    ("maximum", "maximum"),
    ("multipleOf", "multiple of"),
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("pattern", "pattern"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("minProperties", "min properties"),
    ("maxProperties", "max properties"),
    ("default", "default"),
    ("const", "always"),
)


def _constraints(schema: Any) -> tuple[Constraint, ...]:
    if not isinstance(schema, Mapping):
        return ()
    found = []
    for keyword, label in _CONSTRAINT_LABELS:
        if keyword not in schema:
            continue
        value = schema[keyword]
        if keyword == "minimum" and schema.get("exclusiveMinimum") is True:
            label = "greater than"
        if keyword == "maximum" and schema.get("exclusiveMaximum") is True:
            label = "less than"
        text = value if isinstance(value, str) and keyword == "pattern" else json.dumps(value)
        found.append(Constraint(label, text))
    for keyword, label in (("exclusiveMinimum", "greater than"), ("exclusiveMaximum", "less than")):
        value = schema.get(keyword)
        if isinstance(value, int | float) and not isinstance(value, bool):  # 3.1
            found.append(Constraint(label, json.dumps(value)))
    for keyword, label in (
        ("uniqueItems", "unique items"),
        ("readOnly", "read-only"),
        ("writeOnly", "write-only"),
        ("deprecated", "deprecated"),
    ):
        if schema.get(keyword) is True:
            found.append(Constraint(label, "yes"))
    return tuple(found)


def _scheme_sentence(scheme: Mapping[str, Any]) -> Markup:
    kind = scheme.get("type")
    if kind == "http":
        name = str(scheme.get("scheme", "")).lower()
        if name == "bearer":
            fmt = scheme.get("bearerFormat")
            form = Markup(" ({})").format(fmt) if fmt else Markup("")
            return Markup(
                "HTTP bearer token{}: send the header <code>Authorization: Bearer "
                "&lt;token&gt;</code> with each request."
            ).format(form)
        if name == "basic":
            return Markup(
                "HTTP Basic: send <code>Authorization: Basic &lt;base64 of "
                "user:password&gt;</code>."
            )
        return Markup("HTTP <code>{}</code> authentication.").format(name)
    if kind == "apiKey":
        return Markup("An API key in the {} <code>{}</code>.").format(
            scheme.get("in", "header"), scheme.get("name", "")
        )
    if kind == "oauth2":
        flows = ", ".join(str(flow) for flow in scheme.get("flows") or ())
        return Markup(
            "OAuth 2 ({}): send the access token as <code>Authorization: Bearer "
            "&lt;token&gt;</code>."
        ).format(flows or "no flow given")
    if kind == "openIdConnect":
        return Markup("OpenID Connect, discovery at <code>{}</code>.").format(
            scheme.get("openIdConnectUrl", "")
        )
    if kind == "mutualTLS":
        return Markup("A client TLS certificate.")
    return Markup("Scheme <code>{}</code>.").format(kind)
