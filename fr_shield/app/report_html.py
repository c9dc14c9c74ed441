"""The check report as one self-contained HTML page: images and plots inline, no external links."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-top:1px solid #ddd;padding-top:1em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em} td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.protected{color:#0a7a2f;font-weight:600} .matched{color:#b00020;font-weight:600} .other{color:#666;font-weight:600}
td.hit{background:#fbd5da} td.miss{background:#d7f2df}
.faces{display:flex;flex-wrap:wrap;gap:1.5em} figure{margin:0} figcaption{font-size:.8em;color:#555;text-align:center}
.trio{display:flex;gap:4px} .trio img{image-rendering:auto;border:1px solid #ccc}
.note{color:#555;font-size:.9em}
"""


WHITE_BOX_NOTE = ("a model the protection was made against; no match there does not say that face recognition "
                  "it was not made with fails too")


def png_data_uri(array: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def similarity_plot(photo: dict, models: dict, transforms: list[str]) -> str:
    """One panel per model: similarity of each face under each transform, threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(models)
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.0), squeeze=False)
    x = np.arange(len(transforms))
    for axis, name in zip(axes[0], names):
        for number, face in enumerate(photo["faces"]):
            values = [face["similarity"][name][t] for t in transforms]
            axis.plot(x, values, marker="o", markersize=3, label=f"face {number + 1}")
        axis.axhline(models[name]["threshold"], color="#b00020", linestyle="--", linewidth=1, label="match threshold")
        axis.set_title(f"{name} ({'−distance' if models[name]['similarity'] == 'euclidean' else 'cosine'})", fontsize=9)
        axis.set_xticks(x)
        axis.set_xticklabels(transforms, rotation=60, fontsize=7)
        axis.tick_params(axis="y", labelsize=7)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("similarity to the original", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="best")
    figure.tight_layout()
    uri = _figure_uri(figure)
    plt.close(figure)
    return uri


def _verdict(value: str) -> str:
    kind = value if value in ("protected", "matched") else "other"
    return f'<span class="{kind}">{html.escape(value)}</span>'


def _face_table(face: dict, models: dict, transforms: list[str]) -> str:
    rows = ["<tr><th class=l>model</th>" + "".join(f"<th>{html.escape(t)}</th>" for t in transforms) + "</tr>"]
    for name in models:
        cells = []
        for t in transforms:
            value, hit = face["similarity"][name][t], face["matched"][name][t]
            cells.append(f'<td class="{"hit" if hit else "miss"}">{value:.3f}</td>')
        used = " — <i>used to protect</i>" if models[name].get("used_to_protect") else ""
        rows.append(f"<tr><td class=l>{html.escape(name)} (≥ {models[name]['threshold']}){used}</td>{''.join(cells)}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def write_html(report: dict, visuals: dict[str, list[dict]]) -> str:
    models, transforms = report["models"], report["transforms"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>fr_shield check</title><style>{STYLE}</style></head><body>",
             "<h1>fr_shield check report</h1>",
             f"<p>Original: <code>{html.escape(report['original'])}</code><br>Protected: <code>{html.escape(report['protected'])}</code></p>",
             ("<p class=note>A model <b>matches</b> a face when the similarity between the original face and the protected "
              "face (after the transform) reaches the model's verification threshold. A photo is <b>protected</b> when no model "
              "matches any of its faces under any transform. Cells: red = matched, green = not matched. The difference image "
              "shows 0.5 + 10 × (after − before).</p>")]
    white_box = [name for name, info in models.items() if info.get("used_to_protect")]
    if white_box:
        parts.append(f"<p class=note><b>Used to protect</b> (white-box): {html.escape(', '.join(white_box))} — "
                     f"{html.escape(WHITE_BOX_NOTE)}.</p>")
    summary = ", ".join(f"{count} {html.escape(v)}" for v, count in report["summary"].items())
    parts.append(f"<p><b>Summary:</b> {summary}</p><table><tr><th class=l>photo</th><th>faces</th><th class=l>verdict</th><th class=l>matched by</th></tr>")
    for photo in report["photos"]:
        hits = sorted({h for face in photo["faces"] for h in face["matched_under"]})
        detail = html.escape(", ".join(hits[:8]) + (f" (+{len(hits) - 8})" if len(hits) > 8 else "")) or html.escape(photo.get("reason", ""))
        parts.append(f"<tr><td class=l>{html.escape(photo['file'])}</td><td>{len(photo['faces'])}</td>"
                     f"<td class=l>{_verdict(photo['verdict'])}</td><td class=l>{detail}</td></tr>")
    parts.append("</table>")
    for photo in report["photos"]:
        parts.append(f"<h2>{html.escape(photo['file'])} — {_verdict(photo['verdict'])}</h2>")
        if photo.get("reason"):
            parts.append(f"<p class=note>{html.escape(photo['reason'])}</p>")
        if not photo["faces"]:
            continue
        figures = []
        for number, (face, views) in enumerate(zip(photo["faces"], visuals.get(photo["file"], []))):
            trio = "".join(f"<figure><img src='{png_data_uri(views[k])}' alt='{k}'><figcaption>{k}</figcaption></figure>"
                           for k in ("before", "after", "difference"))
            caption = f"face {number + 1}: {_verdict(face['verdict'])}" + ("" if face["detected_in_protected"] else
                                                                             " (not detected in the protected photo)")
            figures.append(f"<div><div class=trio>{trio}</div><p>{caption}</p>{_face_table(face, models, transforms)}</div>")
        parts.append(f"<div class=faces>{''.join(figures)}</div>")
        parts.append(f"<img src='{similarity_plot(photo, models, transforms)}' alt='similarity per model and transform'>")
    parts.append("</body></html>")
    return "\n".join(parts)
