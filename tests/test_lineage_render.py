"""Lineage rendering: DOT, Mermaid, and the pure-Python layered layout behind SVG and PNG."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

import pytest

from lakebed.lineage.graph import Edge, Graph, Node, dataset_id, job_id
from lakebed.lineage.render import FORMATS, render, shorten, to_dot, to_mermaid, to_png, to_svg

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ds(name: str, namespace: str = "s3://lake", label: str | None = None) -> Node:
    return Node(dataset_id(namespace, name), "dataset", label or name, namespace, name, {"versions": ["1"]})


def job(name: str, namespace: str = "lakebed") -> Node:
    return Node(job_id(namespace, name), "job", name, namespace, name, {"runs": ["r1"]})


def graph(nodes: Sequence[Node], pairs: Sequence[tuple[Node, Node] | tuple[Node, Node, str | None]]) -> Graph:
    edges = tuple(Edge(p[0].id, p[1].id, p[2] if len(p) == 3 else None) for p in pairs)
    return Graph(tuple(nodes), edges)


def chain() -> Graph:
    raw, ingest, table, build, features = (
        ds("landing/orders.csv", "file", "orders.csv"),
        job("ingest_orders"),
        ds("raw/orders", label="raw.orders"),
        job("build_features"),
        ds("features/orders_daily", label="features.orders_daily"),
    )
    return graph(
        [raw, ingest, table, build, features],
        [(raw, ingest), (ingest, table, "v3"), (table, build, "v3"), (build, features, "v1")],
    )


def diamond() -> Graph:
    source, left, right, merged, join = ds("source"), job("left"), job("right"), ds("merged"), job("join")
    a, b = ds("a"), ds("b")
    return graph(
        [source, left, right, a, b, join, merged],
        [(source, left), (source, right), (left, a), (right, b), (a, join), (b, join), (join, merged)],
    )


def cycle() -> Graph:
    """A job that reads and writes the same table (a MERGE), plus a longer loop and a self-loop."""
    table, upsert, other, refresh = ds("customers"), job("upsert"), ds("staging"), job("refresh")
    return graph(
        [table, upsert, other, refresh],
        [
            (table, upsert, "v4"),
            (upsert, table, "v5"),
            (upsert, other),
            (other, refresh),
            (refresh, table),
            (refresh, refresh, "retry"),
        ],
    )


def fan_out(width: int = 49) -> Graph:
    topic = ds("events", "kafka://broker:9092")
    split = job("split_events")
    tables = [ds(f"raw/event_type_{i:02d}", label=f"raw.event_type_{i:02d}") for i in range(width)]
    return graph(
        [topic, split, *tables], [(topic, split), *((split, t, f"v{i}") for i, t in enumerate(tables))]
    )


def tricky() -> Graph:
    evil = ds("x", label='<b>"tables" & <stuff></b>')
    writer = job("write <it> & \"quote\" 'it'")
    return graph([evil, writer], [(writer, evil, 'v<1> & "2"')])


def lakehouse() -> Graph:
    """A dozen nodes in the lakehouse shape: files and a topic, ingest jobs, raw tables, features, quality."""
    orders_csv = ds("/landing/orders.csv", "file", "orders.csv")
    customers = ds("/landing/customers.json", "file", "customers.json")
    clicks_topic = ds("clickstream", "kafka://localhost:9092")
    ingest_orders, ingest_customers, stream_clicks = (
        job("ingest_orders"),
        job("ingest_customers"),
        job("stream"),
    )
    raw_orders, raw_customers, raw_clicks = (
        ds("raw/orders", label="raw.orders"),
        ds("raw/customers"),
        ds("raw/clicks"),
    )
    build = job("build_customer_features")
    features = ds("features/customer_daily", label="features.customer_daily_activity_aggregates_v2")
    quality = job("quality_check")
    results = ds("system/quality_results", label="quality_results")
    return graph(
        [orders_csv, customers, clicks_topic, ingest_orders, ingest_customers, stream_clicks, raw_orders]
        + [raw_customers, raw_clicks, build, features, quality, results],
        [
            (orders_csv, ingest_orders),
            (ingest_orders, raw_orders, "v3"),
            (customers, ingest_customers),
            (ingest_customers, raw_customers, "v1"),
            (clicks_topic, stream_clicks, "0:0-99"),
            (stream_clicks, raw_clicks, "v7"),
            (raw_orders, build, "v3"),
            (raw_customers, build, "v1"),
            (raw_clicks, build, "v7"),
            (build, features, "v12"),
            (raw_orders, quality),
            (raw_clicks, quality),
            (features, quality),
            (quality, results),
        ],
    )


GRAPHS = {
    "chain": chain,
    "diamond": diamond,
    "cycle": cycle,
    "fan_out": fan_out,
    "tricky": tricky,
    "lakehouse": lakehouse,
}


def distinct_pairs(g: Graph) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in g.edges}


def parse_svg(g: Graph) -> tuple[str, ET.Element]:
    text = to_svg(g)
    return text, ET.fromstring(text.encode("utf-8"))


def node_boxes(root: ET.Element) -> dict[str, tuple[float, float, float, float]]:
    boxes = {}
    for group in root.iter(f"{SVG}g"):
        if "node" in (group.get("class") or "").split():
            rects = [r for r in group.iter(f"{SVG}rect") if r.get("class") == "node-box"]
            assert len(rects) == 1
            r = rects[0]
            boxes[group.get("data-id") or ""] = (
                float(r.get("x") or 0),
                float(r.get("y") or 0),
                float(r.get("width") or 0),
                float(r.get("height") or 0),
            )
    return boxes


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_svg_has_a_box_per_node_and_a_path_per_edge(name: str) -> None:
    g = GRAPHS[name]()
    _, root = parse_svg(g)
    assert root.tag == f"{SVG}svg"
    boxes = node_boxes(root)
    assert set(boxes) == g.ids()
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "node-box"]) == len(g.nodes)
    paths = [p for p in root.iter(f"{SVG}path") if p.get("class") == "edge-path"]
    assert len(paths) == len(distinct_pairs(g))
    drawn = {
        (e.get("data-source"), e.get("data-target")) for e in root.iter(f"{SVG}g") if e.get("class") == "edge"
    }
    assert drawn == distinct_pairs(g)
    for p in paths:
        assert re.fullmatch(
            r"M[-\d.]+,[-\d.]+( C[-\d.]+,[-\d.]+ [-\d.]+,[-\d.]+ [-\d.]+,[-\d.]+)+", p.get("d") or ""
        )


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_node_boxes_do_not_overlap_and_fit_the_canvas(name: str) -> None:
    _, root = parse_svg(GRAPHS[name]())
    width, height = float(root.get("width") or 0), float(root.get("height") or 0)
    boxes = list(node_boxes(root).values())
    for x, y, w, h in boxes:
        assert w > 0 and h > 0
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            apart = x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1
            assert apart, f"boxes overlap: {(x1, y1, w1, h1)} and {(x2, y2, w2, h2)}"


@pytest.mark.parametrize("name", ["chain", "diamond", "fan_out", "tricky", "lakehouse"])
def test_acyclic_edges_go_left_to_right(name: str) -> None:
    g = GRAPHS[name]()
    _, root = parse_svg(g)
    boxes = node_boxes(root)
    for e in g.edges:
        sx, _, sw, _ = boxes[e.source]
        tx, _, _, _ = boxes[e.target]
        assert sx + sw < tx, f"{e.source} is not left of {e.target}"


def test_chain_is_one_row_of_layers() -> None:
    g = chain()
    _, root = parse_svg(g)
    boxes = node_boxes(root)
    xs = [boxes[n.id][0] for n in g.nodes]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    centres = {round(y + h / 2, 1) for _, y, _, h in boxes.values()}
    assert len(centres) == 1  # a chain is drawn straight


def test_labels_are_escaped() -> None:
    g = tricky()
    text, root = parse_svg(g)
    assert "<b>" not in text and "<stuff>" not in text
    assert "&lt;b&gt;&quot;tables&quot; &amp; &lt;stuff&gt;&lt;/b&gt;" in text
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "label"]
    assert '<b>"tables" & <stuff></b>' in labels
    assert "write <it> & \"quote\" 'it'" in labels
    assert any(t.text == 'v<1> & "2"' for t in root.iter(f"{SVG}text"))
    ids = {g.get("data-id") for g in root.iter(f"{SVG}g") if g.get("data-id")}
    assert ids == {n.id for n in tricky().nodes}


def test_control_characters_do_not_break_the_xml() -> None:
    node = ds("bad", label="tab\there\x00nul\x1bescape\nnewline")
    _, root = parse_svg(Graph((node,), ()))
    (label,) = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "label"]
    assert label is not None and "\x00" not in label and "\x1b" not in label


def test_long_labels_are_shortened_with_the_full_text_in_a_tooltip() -> None:
    long = "features.customer_lifetime_value_rolling_ninety_day_window_by_region_and_channel"
    g = Graph((ds("f", label=long),), ())
    _, root = parse_svg(g)
    (node,) = [n for n in root.iter(f"{SVG}g") if n.get("data-id")]
    label = next(t.text for t in node.iter(f"{SVG}text") if t.get("class") == "label")
    assert label is not None and "…" in label and len(label) < len(long)
    assert label.startswith("features.customer") and label.endswith(long[-3:])
    tooltip = node.find(f"{SVG}title")
    assert tooltip is not None and long in (tooltip.text or "")
    assert shorten("short", 200, 13) == "short"
    assert shorten(long, 100, 13).count("…") == 1


def test_parallel_edges_are_one_arrow_listing_the_versions() -> None:
    table, writer = ds("t"), job("w")
    g = Graph((table, writer), tuple(Edge(writer.id, table.id, f"v{i}") for i in (10, 2, 1, 3, 9)))
    text, root = parse_svg(g)
    assert len([p for p in root.iter(f"{SVG}path") if p.get("class") == "edge-path"]) == 1
    assert "v1 … v10 (5)" in text
    assert to_dot(g).count("->") == 1 and to_mermaid(g).count("-->") == 1


def test_edges_to_unknown_nodes_get_placeholders() -> None:
    table = ds("t")
    g = Graph((table,), (Edge("job:lakebed:ghost", table.id),))
    _, root = parse_svg(g)
    assert set(node_boxes(root)) == {table.id, "job:lakebed:ghost"}
    assert "job:lakebed:ghost" in to_dot(g)


@pytest.mark.timeout(20)
def test_cycles_terminate_and_draw_every_edge() -> None:
    g = cycle()
    for fmt in FORMATS:
        assert render(g, fmt)
    _, root = parse_svg(g)
    assert len([p for p in root.iter(f"{SVG}path") if p.get("class") == "edge-path"]) == len(
        distinct_pairs(g)
    )
    big = [ds(f"t{i}") for i in range(30)]
    ring = [job(f"j{i}") for i in range(30)]
    pairs = [(big[i], ring[i]) for i in range(30)] + [(ring[i], big[(i + 1) % 30]) for i in range(30)]
    pairs += [(ring[i], big[(i * 7) % 30]) for i in range(30)]
    assert ET.fromstring(to_svg(graph(big + ring, pairs)))


def test_output_is_deterministic_and_independent_of_input_order() -> None:
    g = lakehouse()
    shuffled = Graph(tuple(reversed(g.nodes)), tuple(reversed(g.edges)))
    for fmt in FORMATS:
        assert render(g, fmt) == render(g, fmt) == render(shuffled, fmt)


def test_empty_graph_renders() -> None:
    empty = Graph()
    root = ET.fromstring(to_svg(empty))
    assert not node_boxes(root)
    assert to_dot(empty).startswith("digraph")
    assert to_mermaid(empty).startswith("flowchart LR")
    assert to_png(empty).startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("name", ["lakehouse", "fan_out", "tricky", "cycle"])
def test_png_opens_with_a_sensible_size(name: str) -> None:
    from PIL import Image

    g = GRAPHS[name]()
    data = render(g, "png")
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG" and image.mode == "RGB"
    svg = ET.fromstring(to_svg(g))
    width, height = image.size
    assert 200 <= width <= 16000 and 100 <= height <= 16000
    # the same layout as the SVG, at 2 px per unit (give or take the PNG font's metrics)
    assert 0.7 < (width / 2) / float(svg.get("width") or 1) < 1.4
    assert 0.8 < (height / 2) / float(svg.get("height") or 1) < 1.25
    colours = image.getcolors(maxcolors=1 << 24)
    assert colours is not None and len(colours) > 10  # something was drawn, anti-aliased


def test_png_scale() -> None:
    from PIL import Image

    small = Image.open(io.BytesIO(to_png(chain(), scale=1)))
    large = Image.open(io.BytesIO(to_png(chain(), scale=2)))
    assert abs(large.size[0] - 2 * small.size[0]) <= 2


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_dot_names_every_node_and_edge(name: str) -> None:
    g = GRAPHS[name]()
    dot = to_dot(g)
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}")
    assert "rankdir=LR" in dot
    for node in g.nodes:
        quoted = '"' + node.id.replace("\\", "\\\\").replace('"', '\\"') + '"'
        assert f"  {quoted} [" in dot
    assert dot.count(" -> ") == len(distinct_pairs(g))
    assert dot.count('"') % 2 == dot.count('\\"') % 2  # every string is closed
    assert render(g, "dot") == dot.encode("utf-8")


def test_dot_shapes_and_escaping() -> None:
    dot = to_dot(tricky())
    assert 'label="<b>\\"tables\\" & <stuff></b>"' in dot
    assert 'style="rounded,filled"' in dot and 'style="filled"' in dot
    assert 'label="v<1> & \\"2\\""' in dot


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_mermaid_flowchart(name: str) -> None:
    g = GRAPHS[name]()
    text = to_mermaid(g)
    assert text.startswith("flowchart LR\n")
    assert text.count("-->") == len(distinct_pairs(g))
    node_lines = [line for line in text.splitlines() if re.match(r"^  n\d+[\[(]", line)]
    assert len(node_lines) == len(g.nodes)
    for line in node_lines:
        body = line.strip()
        label = re.fullmatch(r'n\d+(\[\("(.*)"\)\]|\["(.*)"\])', body)
        assert label, body
        inner = label.group(2) if label.group(2) is not None else label.group(3)
        assert '"' not in inner and "<b>" not in inner
    datasets = sum(1 for n in g.nodes if n.kind == "dataset")
    assert sum(1 for line in node_lines if '[("' in line) == datasets


def test_mermaid_escapes_quotes() -> None:
    text = to_mermaid(tricky())
    assert "#quot;tables#quot;" in text and "#lt;b#gt;" in text and "#amp;" in text


def test_render_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unknown lineage format"):
        render(chain(), "pdf")  # type: ignore[arg-type, unused-ignore]
    assert render(chain(), "svg").startswith(b"<?xml")
    assert render(chain(), "mermaid").startswith(b"flowchart LR")


def test_custom_title() -> None:
    text = to_svg(chain(), title="Orders & <features>")
    assert "Orders &amp; &lt;features&gt;" in text
    assert "Orders & <features>" in to_dot(chain(), title="Orders & <features>").replace("\\", "")


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_every_arrow_points_at_its_target(name: str) -> None:
    g = GRAPHS[name]()
    _, root = parse_svg(g)
    boxes = node_boxes(root)
    for group in root.iter(f"{SVG}g"):
        if group.get("class") != "edge":
            continue
        head = group.find(f"{SVG}polygon")
        assert head is not None
        tip_x, tip_y = (float(v) for v in (head.get("points") or "").split()[0].split(","))
        x, y, w, h = boxes[group.get("data-target") or ""]
        on_side = abs(tip_x - x) < 0.2 or abs(tip_x - (x + w)) < 0.2
        on_top = abs(tip_y - y) < 0.2
        assert (on_side and y <= tip_y <= y + h) or (on_top and x <= tip_x <= x + w)
        if group.get("data-source") == group.get("data-target"):
            assert on_top  # a self-loop comes back down onto the box


def test_png_without_dejavu_falls_back_to_pillows_fonts(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image, ImageFont

    from lakebed.lineage import render as module

    real_truetype = ImageFont.truetype

    def no_truetype(font: object = None, *args: Any, **kwargs: Any) -> ImageFont.FreeTypeFont:
        if isinstance(font, str):  # a font file by name, as DejaVu is asked for; Pillow's own font is bytes
            raise OSError("no such font")
        return real_truetype(font, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageFont, "truetype", no_truetype)
    module._png_font.cache_clear()
    try:
        scalable = Image.open(io.BytesIO(to_png(lakehouse())))
        assert scalable.size[0] > 400

        def old_pillow(size: float | None = None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
            if size is not None:
                raise TypeError("load_default() got an unexpected keyword argument 'size'")
            return ImageFont.load_default_imagefont()

        monkeypatch.setattr(ImageFont, "load_default", old_pillow)
        module._png_font.cache_clear()
        bitmap = Image.open(io.BytesIO(to_png(lakehouse())))
        assert bitmap.size[0] > 400 and bitmap.format == "PNG"
    finally:
        module._png_font.cache_clear()  # empty again, so later tests load the real fonts
