"""``/api/v1/docs``: the OpenAPI document rendered on the server (webapp/apidocs.py).

The real page: every operation has its section and anchor, Markdown leaves no backtick,
every JSON example (and every curl body) is valid against its schema, every in-page link
lands. A crafted hostile document: nothing it says becomes markup or a script link. In
Chromium at 1280 and 360 px: no CSP violation, no horizontal overflow; the run saves
``build/screenshots/api-docs-<width>.png``.
"""

from __future__ import annotations

import json
import shlex
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from flask import Flask, render_template
from flask.testing import FlaskClient
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from webapp.apidocs import build_docs, example_of, markdown
from webapp.openapi import openapi_document

if TYPE_CHECKING:  # playwright is needed by the browser test only
    from playwright.sync_api import Page

SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The page reads no table: SQLite only (conftest's runs each test on both backends)."""
    return f"sqlite:///{tmp_path / 'test.db'}"


class DocsHtml(HTMLParser):
    """What the tests look at in the HTML: tags, ids, links, operation sections, examples."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.ids: set[str] = set()
        self.operations: list[dict[str, str]] = []
        self.examples: list[tuple[str, str]] = []  # (schema pointer, text)
        self.codes: list[str] = []  # the text of every <pre><code>
        self._example: str | None = None
        self._code: list[str] | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.tags.append((tag, attributes))
        if "id" in attributes:
            assert attributes["id"] not in self.ids, f"duplicate id {attributes['id']}"
            self.ids.add(attributes["id"])
        if tag == "section" and "operation" in attributes.get("class", "").split():
            self.operations.append(attributes)
        if tag == "code" and self.tags[-2][0] == "pre":
            self._code = []
            self._example = attributes.get("data-schema-pointer")

    def handle_endtag(self, tag: str) -> None:
        if tag == "code" and self._code is not None:
            text = "".join(self._code)
            self.codes.append(text)
            if self._example is not None:
                self.examples.append((self._example, text))
            self._code = self._example = None

    def handle_data(self, data: str) -> None:
        self._text.append(data)
        if self._code is not None:
            self._code.append(data)

    @property
    def text(self) -> str:
        return "".join(self._text)

    def attribute_values(self, name: str) -> list[str]:
        return [attributes[name] for _, attributes in self.tags if name in attributes]


def _docs_html(client: FlaskClient) -> str:
    response = client.get("/api/v1/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html: str = response.get_data(as_text=True)
    return html


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


def _at_pointer(document: dict[str, Any], pointer: str) -> Any:
    """The value at a JSON pointer (RFC 6901), written here rather than taken from the code
    under test."""
    value: Any = document
    for token in pointer.split("/")[1:]:
        value = value[token.replace("~1", "/").replace("~0", "~")]
    return value


def _validator(document: dict[str, Any], schema: dict[str, Any]) -> OAS30Validator:
    # The schema at the root, the document's components beside it: its "#/components/..."
    # references resolve as they do in the document.
    return OAS30Validator(
        {**schema, "components": document.get("components", {})},
        format_checker=oas30_format_checker,
    )


def test_every_operation_has_its_section_anchor_and_contents_link(client: FlaskClient) -> None:
    document = openapi_document()
    page = DocsHtml(_docs_html(client))
    sections = {(s["data-method"], s["data-path"]): s["id"] for s in page.operations}
    assert set(sections) == _operations(document)
    assert len(page.operations) == len(sections)  # each operation once
    links = set(page.attribute_values("href"))
    for anchor in sections.values():
        assert f"#{anchor}" in links, anchor
    for name in document["components"]["schemas"]:
        assert f"schema-{name}" in page.ids, name
    for name in document["components"]["securitySchemes"]:
        assert f"security-{name}" in page.ids, name
    for tag in {
        tag for item in document["paths"].values() for op in item.values() for tag in op["tags"]
    }:
        assert f"tag-{tag}" in page.ids and f"#tag-{tag}" in links, tag
    # Every in-page link lands somewhere, the raw document is one click away.
    fragments = [href[1:] for href in links if href.startswith("#")]
    assert fragments and all(fragment in page.ids for fragment in fragments)
    assert "/api/v1/openapi.json" in links
    assert "/static/docs.css" in page.attribute_values("href")


def test_markdown_is_rendered_and_leaves_no_backtick(client: FlaskClient) -> None:
    html = _docs_html(client)
    assert "`" not in html
    # The info description's `Authorization: Bearer <token>` is code, not text with ticks.
    assert "<code>Authorization: Bearer &lt;token&gt;</code>" in html
    assert "Not ready; <code>checks</code> says why." in html  # a response description


def test_every_example_is_json_valid_against_its_schema(client: FlaskClient) -> None:
    document = openapi_document()
    page = DocsHtml(_docs_html(client))
    json_bodies = sum(
        1
        for item in document["paths"].values()
        for op in item.values()
        for response in [*op["responses"].values(), op.get("requestBody", {})]
        for media_type in response.get("content", {})
        if media_type.split(";")[0] == "application/json" or media_type.endswith("+json")
    )
    assert len(page.examples) == json_bodies + len(document["components"]["schemas"])
    for pointer, text in page.examples:
        example = json.loads(text)
        schema = _at_pointer(document, pointer)
        errors = [e.message for e in _validator(document, schema).iter_errors(example)]
        assert errors == [], (pointer, example)


def test_curl_lines_send_the_token_and_a_valid_body(client: FlaskClient) -> None:
    document = openapi_document()
    page = DocsHtml(_docs_html(client))
    curls = [
        shlex.split(code.replace("\\\n", " ")) for code in page.codes if code.startswith("curl")
    ]
    assert len(curls) == len(_operations(document))
    secured = sum(
        1
        for item in document["paths"].values()
        for op in item.values()
        if op.get("security", document["security"])
    )
    assert sum("Authorization: Bearer $TOKEN" in words for words in curls) == secured > 0
    for words in curls:
        url = next(word for word in words if word.startswith("http"))
        assert urlsplit(url).path.startswith("/api/v1/") and "{" not in url, url
    (post,) = [words for words in curls if "POST" in words and "/feedback" in " ".join(words)]
    assert post[post.index("-H") + 1] == "Authorization: Bearer $TOKEN"
    body = json.loads(post[post.index("-d") + 1])
    schema = document["paths"]["/users/{user_id}/feedback"]["post"]["requestBody"]
    assert _validator(document, schema["content"]["application/json"]["schema"]).is_valid(body)


# ----------------------------------------------------------------------------- renderer units

HOSTILE: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "<script>alert('title')</script>",
        "version": "1",
        "description": "<script>alert(1)</script> [bad](javascript:alert(1)) "
        "[mixed](JaVaScRiPt:alert(2)) [data](data:text/html;base64,PHNjcmlwdD4=) "
        "<javascript:alert(3)> [good](https://example.com/a) [near](/api/v1/health) "
        "![pixel](https://tracker.example/p.png) <img src=x onerror=alert(4)> `code` "
        "[entity](&#106;avascript:alert(15)) [tab](<java\tscript:alert(16)>) "
        "[proto](//evil.example/x) [upper](HTTPS://example.com/b)",
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"key": []}],
    "tags": [{"name": '"><script>alert(5)</script>', "description": "<iframe src=//x>"}],
    "paths": {
        "/things/{id}": {
            "get": {
                "summary": "<b onmouseover=alert(6)>bold</b> `code`",
                "description": "[v](vbscript:msgbox(7)) <style>body{display:none}</style>",
                "tags": ['"><script>alert(5)</script>'],
                "parameters": [
                    {
                        "name": 'id"><script>alert(8)</script>',
                        "in": "path",
                        "required": True,
                        "description": "<iframe src=//evil.example>",
                        "schema": {"type": "string", "pattern": "</code><script>"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "<script>alert(9)</script>\n\nmore <b>text</b>",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Evil"}}
                        },
                    }
                },
            }
        }
    },
    "components": {
        "securitySchemes": {
            "key": {
                "type": "apiKey",
                "in": "header",
                "name": 'X-Key"><script>alert(10)</script>',
                "description": "<script>alert(11)</script>",
            }
        },
        "schemas": {
            "Evil": {
                "type": "object",
                "description": "[x](javascript:alert(12))",
                "properties": {
                    "<script>alert(13)</script>": {
                        "type": "string",
                        "enum": ["</code><script>alert(14)</script>"],
                    }
                },
            }
        },
    },
}


def test_a_hostile_document_renders_no_markup_of_its_own(app: Flask) -> None:
    with app.test_request_context("/api/v1/docs"):
        html = render_template("api_docs.html", docs=build_docs(HOSTILE, origin="http://h"))
    page = DocsHtml(html)
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "style", "iframe", "img", "b", "object", "embed"}
    for _, attributes in page.tags:
        assert not [name for name in attributes if name.startswith("on") or name == "style"]
    for url in page.attribute_values("href") + page.attribute_values("src"):
        assert urlsplit(url).scheme in ("", "http", "https"), url
    links = page.attribute_values("href")
    assert "https://example.com/a" in links and "/api/v1/health" in links  # allowed ones stay
    outside = [url for url in links if not url.startswith("#")]
    assert not [url for url in outside if "script" in url.lower() or url.startswith("data")]
    # The hostile strings are there, as text.
    assert "<script>alert(13)</script>" in page.text
    assert "<b onmouseover=alert(6)>bold</b>" in page.text
    (curl,) = [code for code in page.codes if code.startswith("curl")]
    assert '-H "X-Keyscriptalert10script: $TOKEN"' in curl  # the header name, cleaned


def test_markdown_renders_code_lists_and_safe_links_only() -> None:
    assert str(markdown("Send `Authorization`.")) == "<p>Send <code>Authorization</code>.</p>\n"
    assert "<li>" in markdown("- one\n- two")
    assert 'href="https://example.com/"' in markdown("[ok](https://example.com/)")
    assert "href" not in markdown("[no](javascript:alert(1))")
    assert "href" not in markdown("[no](mailto:x@example.com)")
    assert "href" not in markdown("[no](<java\tscript:alert(1)>)")
    assert 'href="../playlists?page=2#top"' in markdown("[ok](../playlists?page=2#top)")
    assert "<script>" not in markdown("<script>x</script>")
    assert markdown(None) == "" and markdown("   ") == ""


CYCLIC: dict[str, Any] = {
    "openapi": "3.0.3",
    "components": {
        "schemas": {
            "Node": {
                "type": "object",
                "required": ["name", "children", "kind"],
                "properties": {
                    "name": {"type": "string", "minLength": 3, "maxLength": 5},
                    "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
                    "parent": {"allOf": [{"$ref": "#/components/schemas/Node"}], "nullable": True},
                    "next": {"$ref": "#/components/schemas/Node"},
                    "size": {"type": "integer", "minimum": 10, "maximum": 20, "multipleOf": 5},
                    "ratio": {"type": "number", "exclusiveMinimum": True, "minimum": 1},
                    "when": {"type": "string", "format": "date-time"},
                    "kind": {"type": "string", "enum": [None, "leaf"], "nullable": True},
                    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                    "own": {"type": "string", "example": "given"},
                },
            }
        }
    },
}


def test_examples_of_a_cyclic_schema_end_and_fit_it() -> None:
    node = {"$ref": "#/components/schemas/Node"}
    example = example_of(node, CYCLIC)
    assert example["children"] == [] and "parent" not in example and "next" not in example
    assert example["own"] == "given" and example["kind"] == "leaf" and len(example["tags"]) == 2
    assert 10 <= example["size"] <= 20 and example["ratio"] > 1
    assert [e.message for e in _validator(CYCLIC, node).iter_errors(example)] == []


def test_cyclic_schema_page_links_instead_of_expanding(app: Flask) -> None:
    document = {**CYCLIC, "info": {"title": "t", "version": "1"}, "paths": {}}
    with app.test_request_context("/api/v1/docs"):
        html = render_template("api_docs.html", docs=build_docs(document))
    page = DocsHtml(html)
    assert "schema-Node" in page.ids and "#schema-Node" in page.attribute_values("href")
    # One table row, not an endless expansion of Node inside Node.
    assert html.count('<code class="name">children</code>') == 1


# ----------------------------------------------------------------------------- browser


@pytest.mark.browser
@pytest.mark.parametrize("width", [1280, 360])
def test_docs_page_in_chromium(page: Page, live_url: str, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    response = page.goto(f"{live_url}/api/v1/docs")
    assert response is not None and response.ok
    page.wait_for_load_state("load")
    assert page.csp_violations == []  # type: ignore[attr-defined]
    page.locator("#post-users-user_id-feedback").evaluate("section => section.scrollIntoView()")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"api-docs-{width}.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    # docs.css applies (under style-src 'self'): tables become cards on narrow screens.
    display = page.locator("table.fields td").first.evaluate("td => getComputedStyle(td).display")
    assert display == ("block" if width == 360 else "table-cell")
    # Every response opened: nothing hidden may overflow either.
    page.locator("details.response:not([open]) > summary").first.click()  # opens by a click
    page.locator("details.response").evaluate_all("all => all.forEach(d => { d.open = true; })")
    assert page.locator("details.response:not([open])").count() == 0
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, scroll_width
    # Wide code scrolls inside its box: at 360 px some example is wider than its box.
    boxes = page.locator("pre.code").evaluate_all(
        "pres => pres.map(p => [getComputedStyle(p).overflowX, p.scrollWidth > p.clientWidth])"
    )
    assert boxes and all(overflow == "auto" for overflow, _ in boxes)
    assert any(wider for _, wider in boxes) == (width == 360)
    assert page.csp_violations == []  # type: ignore[attr-defined]
