"""The pages netlens writes: the tour's, and the shell every page of the command shares.

A page is one self-contained HTML file next to the PNG files it shows
(:func:`html_page`: one style, and the image check). A short inline script
counts, once the page has loaded, how many of its images the browser could
decode and writes the count into the page (``data-loaded`` and ``data-total``
of ``#images-loaded``), so a headless browser can prove that every picture
shows.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0 2em; }
td { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; vertical-align: top; }
td.value { font-variant-numeric: tabular-nums; font-weight: 600; text-align: right; }
figure { margin: 2.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { margin-top: 0.4em; }
code { background: #f4f4f4; padding: 0 0.2em; }
#images-loaded { color: #777; font-size: 0.85em; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var note = document.getElementById("images-loaded");
  note.dataset.loaded = loaded.length;
  note.dataset.total = images.length;
  note.textContent = loaded.length + " of " + images.length + " images loaded.";
});
"""


def html_page(title: str, body: str, *, style: str = "") -> str:
    """A whole page: ``title``, the shared style (plus ``style``), ``body``, the image check.

    Examples
    --------
    >>> page = html_page("a <b>", "<p>hi</p>", style="p { color: red; }")
    >>> "<title>a &lt;b&gt;</title>" in page, "p { color: red; }" in page
    (True, True)
    >>> page.index("<p>hi</p>") < page.index('id="images-loaded"')
    True
    """
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_STYLE}{style}</style>
</head>
<body>
{body}
<p id="images-loaded" data-loaded="" data-total="">Image check needs JavaScript.</p>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def html_figure(name: str, caption: str) -> str:
    """One ``<figure>``: the image file ``name`` with ``caption`` under it (both escaped)."""
    return (
        f'<figure id="{html.escape(Path(name).stem)}">'
        f'<img src="{html.escape(name)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


@dataclass(frozen=True)
class Number:
    """One measured number of the page: a key for machines, a label for people."""

    key: str
    label: str
    value: float | int | None

    def text(self) -> str:
        """The value as shown: floats with 3 decimals, ``None`` as "none".

        Examples
        --------
        >>> Number("a", "accuracy", 0.98765).text(), Number("b", "count", None).text()
        ('0.988', 'none')
        """
        if self.value is None:
            return "none"
        if isinstance(self.value, float) and not self.value.is_integer():
            return f"{self.value:.3f}"
        return str(int(self.value))


def render_index(numbers: list[Number], captions: Mapping[str, str], settings: str) -> str:
    """The page as a string: numbers table, then one ``<figure>`` per caption, in order.

    Examples
    --------
    >>> page = render_index([Number("acc", "accuracy", 0.5)], {"a.png": "A <b>"}, "cpu")
    >>> '<img src="a.png"' in page, "A &lt;b&gt;" in page, 'data-key="acc">0.500<' in page
    (True, True, True)
    """
    rows = "\n".join(
        f'<tr><td>{html.escape(n.label)}</td><td class="value" data-key="{html.escape(n.key)}">'
        f"{html.escape(n.text())}</td></tr>"
        for n in numbers
    )
    figures = "\n".join(html_figure(name, caption) for name, caption in captions.items())
    body = f"""<h1>netlens tour: inside a small ResNet that reads handwritten digits</h1>
<p>A digit classifier and its self-supervised twin, which only learned to tell
how a digit was turned, looked at with every netlens method. {html.escape(settings)}</p>
<h2>Measured</h2>
<table>
{rows}
</table>
<h2>Pictures</h2>
{figures}"""
    return html_page("netlens tour", body)


def write_index(
    path: Path, numbers: list[Number], captions: Mapping[str, str], settings: str
) -> Path:
    """Write :func:`render_index` to ``path`` (UTF-8) and return the path.

    Examples
    --------
    >>> import tempfile
    >>> path = write_index(Path(tempfile.mkdtemp()) / "index.html", [], {}, "nothing yet")
    >>> path.read_text(encoding="utf-8").startswith("<!doctype html>")
    True
    """
    path.write_text(render_index(numbers, captions, settings), encoding="utf-8")
    return path
