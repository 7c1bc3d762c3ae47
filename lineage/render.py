"""Draw a lineage :class:`~lakebed.lineage.graph.Graph` as Graphviz DOT, Mermaid, SVG or PNG.

``render(graph, fmt)`` returns bytes (UTF-8 text for ``dot``, ``mermaid`` and ``svg``); ``to_dot``,
``to_mermaid``, ``to_svg`` and ``to_png`` are the per-format helpers.

No Graphviz binary is needed: SVG and PNG are laid out here, in pure Python, with a layered
(Sugiyama-style) left-to-right layout:

1. cycles are broken by reversing the back edges of a depth-first search (the edges are still drawn
   pointing the right way);
2. layers are the longest path from the sources, then each source moves right up to the layer before
   its nearest reader, so a table read only by a late job does not drag a long edge across the picture;
3. an edge spanning several layers gets a dummy vertex per layer crossed, and the order within each
   layer comes from barycenter sweeps plus adjacent swaps, keeping the order with the fewest crossings;
4. vertical positions pull every vertex towards the mean of its neighbours while keeping the order and
   spacing of its layer (an isotonic regression per layer, a few sweeps), so edges run as straight as
   they can; columns are as wide as their widest box and gaps as wide as their edge labels need.

Datasets are rounded blue boxes, jobs square-cornered amber boxes; edges are cubic Bézier arrows with
their labels (the versions read or written), set on a straight stretch at the end where the edges
spread out (beside each target of a fan-out) and nudged apart where they would overlap. Parallel edges between the same two nodes (one per
version) are drawn as one arrow whose label lists the versions. Long labels are shortened in the middle
with an ellipsis; the SVG keeps the full text in ``<title>`` tooltips. Output is deterministic: nodes
are processed in id order, whatever order the graph lists them in. An edge naming a node the graph does
not list gets a placeholder node rather than being dropped.

The PNG is the same layout drawn with Pillow (imported only when a PNG is asked for), measured and
drawn with DejaVu Sans where the system has it, else Pillow's built-in font, and supersampled for
smooth lines when the picture is small enough.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from lakebed.lineage.graph import Graph, Node, NodeKind

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont

Format = Literal["dot", "mermaid", "svg", "png"]
FORMATS: tuple[Format, ...] = ("dot", "mermaid", "svg", "png")

Point = tuple[float, float]
Cubic = tuple[Point, Point, Point, Point]
Measure = Callable[[str, float, bool], float]  # (text, font size, bold) -> width in px

# --- Look ---------------------------------------------------------------------------------------------

FONT_FAMILY = "Helvetica, Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif"
COLORS: dict[str, str] = {
    "background": "#ffffff",
    "text": "#111827",
    "muted": "#4b5563",
    "edge": "#6b7280",
    "dataset_fill": "#dbeafe",
    "dataset_stroke": "#2563eb",
    "job_fill": "#fde8c8",
    "job_stroke": "#c2680c",
}
FILL: dict[NodeKind, str] = {"dataset": COLORS["dataset_fill"], "job": COLORS["job_fill"]}
STROKE: dict[NodeKind, str] = {"dataset": COLORS["dataset_stroke"], "job": COLORS["job_stroke"]}
CORNER: dict[NodeKind, float] = {"dataset": 9.0, "job": 1.5}

LABEL_SIZE = 13.0
SUB_SIZE = 10.5
EDGE_LABEL_SIZE = 10.0
TITLE_SIZE = 14.0

MARGIN = 20.0
TITLE_BAND = 38.0  # height of the title/legend line above the drawing
PAD_X = 12.0  # text padding inside a box
MIN_BOX_W = 84.0
MAX_LABEL_W = 220.0  # longer labels are shortened with an ellipsis
MAX_EDGE_LABEL_W = 130.0
MAX_TITLE_W = 760.0
BOX_H = 34.0
BOX_H_SUB = 46.0  # a box with a second (namespace) line
NODE_GAP = 18.0  # vertical space between two boxes of a layer
DUMMY_GAP = 11.0  # ... between a box and an edge passing through the layer
DUMMY_DUMMY_GAP = 7.0  # ... between two edges passing through the layer
LAYER_GAP = 70.0  # minimum horizontal space between two columns
ARROW_LEN = 8.0
ARROW_HALF_W = 3.4
PORT_STEP = 8.0  # vertical spacing of edge ends on a box side
PORT_MARGIN = 5.0
LOOP_RISE = 26.0  # control-point height of a self-loop
EDGE_LABEL_PAD = 2.5


# --- Text helpers ---------------------------------------------------------------------------------------

# Advance widths (per 1000 em) of printable ASCII: the larger of Helvetica's (standard AFM metrics, the
# same as Arial's and Liberation Sans') and DejaVu Sans' (the usual sans-serif fallback on Linux), so a
# box sized from them fits its label in any of those fonts.
_WIDTHS = (
    318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337,  # ' ' .. '/'
    636, 636, 636, 636, 636, 636, 636, 636, 636, 636, 337, 337, 838, 838, 838, 556,  # '0' .. '?'
    1015, 684, 686, 722, 770, 667, 611, 778, 752, 295, 500, 667, 557, 863, 748, 787,  # '@' .. 'O'
    667, 787, 722, 667, 611, 732, 684, 989, 685, 667, 685, 390, 337, 390, 838, 556,  # 'P' .. '_'
    500, 613, 635, 550, 635, 615, 352, 635, 634, 278, 278, 579, 278, 974, 634, 612,  # '`' .. 'o'
    635, 635, 411, 521, 392, 634, 592, 818, 592, 592, 525, 636, 337, 636, 838,  # 'p' .. '~'
)  # fmt: skip
_BOLD = 1.12  # bold runs about this much wider


def estimate_width(text: str, size: float, bold: bool = False) -> float:
    """The width of ``text`` in px at font ``size``, estimated from font metrics (no font needed)."""
    units = 0.0
    for ch in text:
        code = ord(ch)
        if 32 <= code < 127:
            units += _WIDTHS[code - 32]
        elif unicodedata.combining(ch):
            continue
        elif unicodedata.east_asian_width(ch) in ("W", "F"):
            units += 1000
        else:
            units += 640
    return units / 1000.0 * size * (_BOLD if bold else 1.0)


_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _clean(text: str) -> str:
    """One line of text without characters XML or the fonts cannot take."""
    text = _INVALID_XML.sub("\ufffd", text)
    return " ".join(text.split())


def shorten(text: str, max_width: float, size: float, measure: Measure = estimate_width) -> str:
    """``text`` if it fits in ``max_width`` px, else its start and end joined by an ellipsis."""
    if measure(text, size, False) <= max_width:
        return text
    lo, hi = 0, len(text) - 1  # how many characters to keep
    best = "…"
    while lo <= hi:
        keep = (lo + hi) // 2
        head = (keep * 3 + 4) // 5
        candidate = text[:head].rstrip() + "…" + text[len(text) - (keep - head) :].lstrip()
        if keep - head == 0:
            candidate = text[:head].rstrip() + "…"
        if measure(candidate, size, False) <= max_width:
            best, lo = candidate, keep + 1
        else:
            hi = keep - 1
    return best


def _natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part
    )


def _fmt(value: float) -> str:
    text = f"{value:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def _xml(text: str) -> str:
    return (
        _INVALID_XML.sub("\ufffd", text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


# --- The graph as drawn: nodes and merged edges --------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    """All edges from one node to another, drawn as one arrow."""

    source: str
    target: str
    labels: tuple[str, ...]

    @property
    def label(self) -> str | None:
        if not self.labels:
            return None
        if len(self.labels) <= 3:
            return ", ".join(self.labels)
        return f"{self.labels[0]} … {self.labels[-1]} ({len(self.labels)})"


def _placeholder(node_id: str) -> Node:
    kind: NodeKind = "job" if node_id.startswith("job:") else "dataset"
    rest = node_id.split(":", 1)[1] if node_id.startswith(("job:", "dataset:")) else node_id
    namespace, _, name = rest.rpartition(":")
    return Node(node_id, kind, name or rest, namespace, name or rest, {"placeholder": True})


def _normalise(graph: Graph) -> tuple[list[Node], list[_Link]]:
    """Nodes in id order (first of each id wins, placeholders for missing ends) and the merged edges."""
    by_id: dict[str, Node] = {}
    for node in graph.nodes:
        if node.kind not in ("dataset", "job"):  # not drawable as either: show it as a dataset
            node = dataclasses.replace(node, kind="dataset")
        by_id.setdefault(node.id, node)
    labels: dict[tuple[str, str], list[str]] = {}
    for edge in graph.edges:
        for end in (edge.source, edge.target):
            if end not in by_id:
                by_id[end] = _placeholder(end)
        known = labels.setdefault((edge.source, edge.target), [])
        label = _clean(edge.label) if edge.label is not None else ""
        if label and label not in known:
            known.append(label)
    nodes = sorted(by_id.values(), key=lambda n: n.id)
    links = [_Link(s, t, tuple(sorted(ls, key=_natural_key))) for (s, t), ls in sorted(labels.items())]
    return nodes, links


def _display_label(node: Node) -> str:
    return _clean(node.label or node.name or node.id) or node.id


def _show_namespaces(nodes: Sequence[Node]) -> dict[str, bool]:
    """A kind whose nodes come from several namespaces shows each node's namespace under its label."""
    spaces: dict[str, set[str]] = {}
    for node in nodes:
        spaces.setdefault(node.kind, set()).add(node.namespace)
    return {kind: len(found) > 1 for kind, found in spaces.items()}


def _default_title(graph: Graph, nodes: Sequence[Node], links: Sequence[_Link]) -> str:
    datasets = sum(1 for n in nodes if n.kind == "dataset")
    jobs = len(nodes) - datasets

    def plural(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    return f"Lineage: {plural(datasets, 'dataset')}, {plural(jobs, 'job')}, {plural(len(links), 'edge')}"


def _tooltip(node: Node) -> str:
    lines = [_clean(node.label or node.name), f"{node.kind} {_clean(node.id)}"]
    for key in sorted(node.details, key=str):
        value = node.details[key]
        if isinstance(value, list | tuple | set | frozenset):
            items = [
                str(v) for v in (sorted(value, key=str) if isinstance(value, set | frozenset) else value)
            ]
            text = ", ".join(items[:12]) + (f", … ({len(items)})" if len(items) > 12 else "")
        else:
            text = str(value)
        lines.append(_clean(f"{key}: {text}")[:200])
    return "\n".join(line for line in lines if line)


# --- Layout -----------------------------------------------------------------------------------------------


@dataclass
class _Box:
    node: Node
    x: float  # top-left corner
    y: float
    w: float
    h: float
    text: str
    sub: str | None
    tooltip: str

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


@dataclass
class _Route:
    link: _Link
    segments: list[Cubic]  # in drawing order: from the source to just before the arrowhead
    tip: Point  # where the arrowhead points to
    label: str | None = None
    label_at: Point | None = None
    tooltip: str = ""


@dataclass
class _Layout:
    width: float
    height: float
    title: str
    boxes: list[_Box] = field(default_factory=list)
    routes: list[_Route] = field(default_factory=list)

    def legend_x(self, measure: Measure) -> float:
        return MARGIN + measure(self.title, TITLE_SIZE, True) + LEGEND_GAP


LEGEND_ITEMS: tuple[tuple[NodeKind, str], ...] = (("dataset", "dataset"), ("job", "job"))
LEGEND_SWATCH_W = 22.0
LEGEND_SWATCH_H = 13.0
LEGEND_GAP = 36.0  # between the title and the legend


def _legend_width(measure: Measure) -> float:
    return sum(LEGEND_SWATCH_W + 6 + measure(text, SUB_SIZE + 1, False) + 16 for _, text in LEGEND_ITEMS)


def _break_cycles(n: int, edges: Sequence[tuple[int, int]]) -> list[bool]:
    """Which edges to reverse so that the graph has no cycle: the back edges of an iterative DFS."""
    out: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for index, (s, t) in enumerate(edges):
        out[s].append(index)
        indegree[t] += 1
    reverse = [False] * len(edges)
    state = [0] * n  # 0 unseen, 1 on the stack, 2 done
    roots = [v for v in range(n) if indegree[v] == 0] + list(range(n))
    for root in roots:
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, 0)]
        while stack:
            v, i = stack[-1]
            if i < len(out[v]):
                stack[-1] = (v, i + 1)
                e = out[v][i]
                w = edges[e][1]
                if state[w] == 0:
                    state[w] = 1
                    stack.append((w, 0))
                elif state[w] == 1:
                    reverse[e] = True
            else:
                state[v] = 2
                stack.pop()
    return reverse


def _assign_layers(n: int, dag: Sequence[tuple[int, int]]) -> list[int]:
    """Longest path from the sources, then sources pulled right next to their nearest successor."""
    succ: list[list[int]] = [[] for _ in range(n)]
    indegree = [0] * n
    for s, t in dag:
        succ[s].append(t)
        indegree[t] += 1
    layer = [0] * n
    remaining = list(indegree)
    ready = [v for v in range(n) if remaining[v] == 0]
    head = 0
    while head < len(ready):
        v = ready[head]
        head += 1
        for w in succ[v]:
            layer[w] = max(layer[w], layer[v] + 1)
            remaining[w] -= 1
            if remaining[w] == 0:
                ready.append(w)
    for v in range(n):
        if indegree[v] == 0 and succ[v]:
            layer[v] = min(layer[w] for w in succ[v]) - 1
    used = sorted(set(layer))
    compact = {value: index for index, value in enumerate(used)}
    return [compact[value] for value in layer]


def _count_crossings(
    order: Sequence[Sequence[int]], down: Sequence[Sequence[int]], pos: Sequence[int]
) -> int:
    total = 0
    for layer in order[:-1]:
        pairs = sorted((pos[u], pos[v]) for u in layer for v in down[u])
        seq = [b for _, b in pairs]
        total += _inversions(seq)
    return total


def _inversions(seq: list[int]) -> int:
    if len(seq) < 2:
        return 0
    mid = len(seq) // 2
    left, right = seq[:mid], seq[mid:]
    count = _inversions(left) + _inversions(right)
    i = j = 0
    merged: list[int] = []
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            count += len(left) - i
            j += 1
    merged.extend(left[i:])
    merged.extend(right[j:])
    seq[:] = merged
    return count


def _order_layers(
    layers: Sequence[list[int]], up: Sequence[list[int]], down: Sequence[list[int]], n_vertices: int
) -> list[list[int]]:
    """Order each layer to reduce crossings: barycenter sweeps and adjacent swaps, keeping the best."""
    order = [list(layer) for layer in layers]
    pos = [0] * n_vertices
    for layer in order:
        for i, v in enumerate(layer):
            pos[v] = i

    def crossings() -> int:
        return _count_crossings(order, down, pos)

    def sweep(indices: Iterable[int], neighbours: Sequence[list[int]]) -> None:
        for li in indices:
            layer = order[li]

            def key(v: int) -> tuple[float, int]:
                nbs = neighbours[v]
                if nbs:
                    return (sum(pos[u] for u in nbs) / len(nbs), pos[v])
                return (float("inf") if not up[v] and not down[v] else float(pos[v]), pos[v])

            layer.sort(key=key)
            for i, v in enumerate(layer):
                pos[v] = i

    def pair(u: int, v: int) -> int:
        """Crossings between the edges of u and of v when u is above v."""
        count = 0
        for nbs in (up, down):
            for a in nbs[u]:
                pa = pos[a]
                count += sum(1 for b in nbs[v] if pa > pos[b])
        return count

    def transpose() -> None:
        for _ in range(6):
            improved = False
            for layer in order:
                for i in range(len(layer) - 1):
                    u, v = layer[i], layer[i + 1]
                    if pair(u, v) > pair(v, u):
                        layer[i], layer[i + 1] = v, u
                        pos[u], pos[v] = i + 1, i
                        improved = True
            if not improved:
                return

    best = [list(layer) for layer in order]
    best_count = crossings()
    size = sum(len(up[v]) for v in range(n_vertices))
    rounds = 24 if size <= 2000 else 6
    use_transpose = n_vertices <= 800
    count_layers = len(order)
    for r in range(rounds):
        if best_count == 0:
            break
        if r % 2 == 0:
            sweep(range(1, count_layers), up)
        else:
            sweep(range(count_layers - 2, -1, -1), down)
        if use_transpose:
            transpose()
        count = crossings()
        if count < best_count:
            best, best_count = [list(layer) for layer in order], count
    return best


def _isotonic(targets: Sequence[float], weights: Sequence[float]) -> list[float]:
    """The non-decreasing sequence closest to ``targets`` in weighted least squares (pool adjacent)."""
    blocks: list[list[float]] = []  # [value, weight, count]
    for t, w in zip(targets, weights, strict=True):
        blocks.append([t, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    result: list[float] = []
    for value, _, count in blocks:
        result.extend([value] * int(count))
    return result


def _layout(graph: Graph, measure: Measure, title: str | None) -> _Layout:
    nodes, links = _normalise(graph)
    show_ns = _show_namespaces(nodes)
    index = {node.id: i for i, node in enumerate(nodes)}
    n = len(nodes)

    boxes: list[_Box] = []
    for node in nodes:
        text = shorten(_display_label(node), MAX_LABEL_W, LABEL_SIZE, measure)
        sub = shorten(_clean(node.namespace), MAX_LABEL_W, SUB_SIZE, measure) if show_ns[node.kind] else None
        width = measure(text, LABEL_SIZE, False)
        if sub:
            width = max(width, measure(sub, SUB_SIZE, False))
        boxes.append(
            _Box(
                node,
                0,
                0,
                max(MIN_BOX_W, width + 2 * PAD_X),
                BOX_H_SUB if sub else BOX_H,
                text,
                sub,
                _tooltip(node),
            )
        )

    loops = [link for link in links if link.source == link.target]
    arrows = [link for link in links if link.source != link.target]
    reverse = _break_cycles(n, [(index[a.source], index[a.target]) for a in arrows])
    dag = [
        (index[a.target], index[a.source]) if rev else (index[a.source], index[a.target])
        for a, rev in zip(arrows, reverse, strict=True)
    ]
    layer_of = _assign_layers(n, dag)

    # Vertices: the nodes, then one dummy per layer crossed by a long edge.
    vertex_layer = list(layer_of)
    chains: list[list[int]] = []
    for lo, hi in dag:
        chain = [lo]
        for crossed in range(layer_of[lo] + 1, layer_of[hi]):
            vertex_layer.append(crossed)
            chain.append(len(vertex_layer) - 1)
        chain.append(hi)
        chains.append(chain)
    n_vertices = len(vertex_layer)
    up: list[list[int]] = [[] for _ in range(n_vertices)]
    down: list[list[int]] = [[] for _ in range(n_vertices)]
    for chain in chains:
        for upper, lower in zip(chain, chain[1:], strict=False):
            down[upper].append(lower)
            up[lower].append(upper)

    # Initial order: depth-first from the sources, so connected nodes start out together.
    n_layers = max(vertex_layer, default=-1) + 1
    layers: list[list[int]] = [[] for _ in range(n_layers)]
    seen = [False] * n_vertices
    connected_roots = [v for v in range(n) if not up[v] and down[v]]
    loners = [v for v in range(n) if not up[v] and not down[v]]  # unconnected nodes go last
    for root in connected_roots + list(range(n, n_vertices)) + [v for v in range(n) if up[v]] + loners:
        if seen[root]:
            continue
        seen[root] = True
        stack = [root]
        while stack:
            v = stack.pop()
            layers[vertex_layer[v]].append(v)
            for w in reversed(down[v]):
                if not seen[w]:
                    seen[w] = True
                    stack.append(w)
    order = _order_layers(layers, up, down, n_vertices)

    # Edge labels: on a long edge, over its middle dummy; on a short one, in the gap between columns.
    labels = [
        shorten(a.label, MAX_EDGE_LABEL_W, EDGE_LABEL_SIZE, measure) if a.label else None for a in arrows
    ]
    label_w = [measure(text, EDGE_LABEL_SIZE, False) + 2 * EDGE_LABEL_PAD if text else 0.0 for text in labels]
    label_dummy: dict[int, int] = {}
    for e, chain in enumerate(chains):
        if labels[e] and len(chain) > 2:
            label_dummy[chain[len(chain) // 2]] = e

    is_dummy = [v >= n for v in range(n_vertices)]
    label_h = EDGE_LABEL_SIZE + 2 * EDGE_LABEL_PAD
    top_ext = [0.0] * n_vertices
    bottom_ext = [0.0] * n_vertices
    for v in range(n_vertices):
        if v < n:
            top_ext[v] = bottom_ext[v] = boxes[v].h / 2
        elif v in label_dummy:
            top_ext[v] = bottom_ext[v] = label_h / 2 + 1
    for link in loops:
        v = index[link.source]
        top_ext[v] += LOOP_RISE * 0.75 + 4 + (label_h if link.label else 0)

    def gap(a: int, b: int) -> float:
        if is_dummy[a] and is_dummy[b]:
            return DUMMY_DUMMY_GAP
        if is_dummy[a] or is_dummy[b]:
            return DUMMY_GAP
        return NODE_GAP

    # Vertical positions: start stacked, then sweeps pulling each vertex towards its neighbours.
    y = [0.0] * n_vertices
    offsets: list[list[float]] = []
    for layer in order:
        offs: list[float] = []
        cursor = 0.0
        for i, v in enumerate(layer):
            if i:
                cursor += bottom_ext[layer[i - 1]] + gap(layer[i - 1], v) + top_ext[v]
            offs.append(cursor)
        offsets.append(offs)
        middle = (offs[-1] if offs else 0.0) / 2
        for v, off in zip(layer, offs, strict=True):
            y[v] = off - middle

    def weight(a: int, b: int) -> float:
        return 6.0 if is_dummy[a] and is_dummy[b] else 2.0 if is_dummy[a] or is_dummy[b] else 1.0

    for r in range(12):
        forward = r % 2 == 0
        sequence = range(n_layers) if forward else range(n_layers - 1, -1, -1)
        for li in sequence:
            layer = order[li]
            targets: list[float] = []
            weights: list[float] = []
            for v, off in zip(layer, offsets[li], strict=True):
                neighbours = (up[v] if forward else down[v]) if r == 0 else up[v] + down[v]
                total = sum(weight(v, u) for u in neighbours)
                if total:
                    target = sum(weight(v, u) * y[u] for u in neighbours) / total
                else:
                    target, total = y[v], 0.05
                targets.append(target - off)
                weights.append(total)
            for v, off, z in zip(layer, offsets[li], _isotonic(targets, weights), strict=True):
                y[v] = z + off

    # Horizontal positions: columns as wide as their widest box, gaps as wide as their labels need.
    col_w = [0.0] * n_layers
    for v in range(n):
        col_w[vertex_layer[v]] = max(col_w[vertex_layer[v]], boxes[v].w)
    right_count = [0] * n_vertices
    left_count = [0] * n_vertices
    for chain in chains:
        right_count[chain[0]] += 1
        left_count[chain[-1]] += 1
    # A one-layer edge's label sits on a straight stub at the end where the edges spread out (the
    # target of a fan-out, the source of a fan-in), or halfway along when both ends are alike.
    label_side: dict[int, str] = {}
    stub_len: dict[int, float] = {}
    gap_w = [LAYER_GAP] * max(n_layers - 1, 0)
    for e, chain in enumerate(chains):
        if not labels[e] or len(chain) != 2:
            continue
        lo, hi = chain
        few = min(right_count[lo], left_count[hi])
        side = "mid"
        if few == 1 and right_count[lo] != left_count[hi]:
            side = "hi" if right_count[lo] > left_count[hi] else "lo"
        label_side[e] = side
        stub_len[e] = ARROW_LEN + label_w[e] + 10
        need = stub_len[e] + 46 if label_side[e] != "mid" else label_w[e] + 2 * ARROW_LEN + 40
        gap_w[vertex_layer[lo]] = max(gap_w[vertex_layer[lo]], need)

    title_text = shorten(
        _clean(title if title is not None else _default_title(graph, nodes, links)),
        MAX_TITLE_W,
        TITLE_SIZE,
        measure,
    )
    top = MARGIN + TITLE_BAND
    col_x = [0.0] * n_layers
    cursor = MARGIN
    for li in range(n_layers):
        col_x[li] = cursor
        cursor += col_w[li] + (gap_w[li] if li < n_layers - 1 else 0.0)
    content_right = cursor
    min_y = min((y[v] - top_ext[v] for v in range(n_vertices)), default=0.0)
    shift = top - min_y
    for v in range(n_vertices):
        y[v] += shift
    for v in range(n):
        box = boxes[v]
        box.x = col_x[vertex_layer[v]] + (col_w[vertex_layer[v]] - box.w) / 2
        box.y = y[v] - box.h / 2

    # Ports: the ends of the edges on a box side, spread out in the order of the other ends.
    out_port: dict[int, float] = {}
    in_port: dict[int, float] = {}
    right_side: dict[int, list[tuple[float, int]]] = {}
    left_side: dict[int, list[tuple[float, int]]] = {}
    for e, chain in enumerate(chains):
        right_side.setdefault(chain[0], []).append((y[chain[1]], e))
        left_side.setdefault(chain[-1], []).append((y[chain[-2]], e))
    for ends_of, ports in ((right_side, out_port), (left_side, in_port)):
        for v, ends in ends_of.items():
            ends.sort()
            k = len(ends)
            span = min((k - 1) * PORT_STEP, boxes[v].h - 2 * PORT_MARGIN) if k > 1 else 0.0
            for i, (_, e) in enumerate(ends):
                ports[e] = y[v] - span / 2 + (span * i / (k - 1) if k > 1 else 0.0)

    routes: list[_Route] = []
    for e, (link, chain) in enumerate(zip(arrows, chains, strict=True)):
        lo, hi = chain[0], chain[-1]
        where = label_side.get(e)
        start: Point = (boxes[lo].x + boxes[lo].w, out_port[e])
        end: Point = (boxes[hi].x, in_port[e])
        pieces: list[tuple[Point, Point, bool]] = []  # (from, to, straight)
        label_at: Point | None = None
        if where == "lo":
            stub_end = (start[0] + stub_len[e], start[1])
            pieces.append((start, stub_end, True))
            label_at = (stub_end[0] - 5 - label_w[e] / 2, start[1])
            start = stub_end
        for d in chain[1:-1]:
            left_end = (col_x[vertex_layer[d]], y[d])
            right_end = (col_x[vertex_layer[d]] + col_w[vertex_layer[d]], y[d])
            pieces.append((start, left_end, False))
            pieces.append((left_end, right_end, True))
            if label_dummy.get(d) == e:
                label_at = ((left_end[0] + right_end[0]) / 2, y[d])
            start = right_end
        if where == "hi":
            stub_start = (end[0] - stub_len[e], end[1])
            pieces.append((start, stub_start, False))
            pieces.append((stub_start, end, True))
            label_at = (stub_start[0] + 5 + label_w[e] / 2, end[1])
        else:
            pieces.append((start, end, False))
            if where == "mid":
                label_at = _bezier_point(_s_curve(start, end), 0.5)
        if reverse[e]:
            pieces = [(b, a, straight) for a, b, straight in reversed(pieces)]
        tip = pieces[-1][1]
        back = ARROW_LEN if tip[0] >= pieces[-1][0][0] else -ARROW_LEN
        a, _, straight = pieces[-1]
        pieces[-1] = (a, (tip[0] - back, tip[1]), straight)
        segments: list[Cubic] = [(a, a, b, b) if straight else _s_curve(a, b) for a, b, straight in pieces]
        tail, head = nodes[index[link.source]], nodes[index[link.target]]
        tooltip = f"{_display_label(tail)} → {_display_label(head)}"
        if link.labels:
            tooltip += f" ({', '.join(link.labels)})"
        routes.append(_Route(link, segments, tip, labels[e], label_at, _clean(tooltip)))

    for link in loops:
        box = boxes[index[link.source]]
        right, left = box.x + box.w * 0.62, box.x + box.w * 0.38
        start, end = (right, box.y), (left, box.y - ARROW_LEN)
        curve: Cubic = (start, (right, box.y - LOOP_RISE), (left, box.y - LOOP_RISE), end)
        loop_text = shorten(link.label, MAX_EDGE_LABEL_W, EDGE_LABEL_SIZE, measure) if link.label else None
        at = (box.cx, box.y - LOOP_RISE * 0.75 - label_h / 2 - 2) if loop_text else None
        tooltip = f"{_display_label(box.node)} → {_display_label(box.node)}"
        if link.labels:
            tooltip += f" ({', '.join(link.labels)})"
        routes.append(_Route(link, [curve], (left, box.y), loop_text, at, _clean(tooltip)))

    _separate_labels(routes, measure)
    # Everything below the title band: shift down whatever labels or loops poke above it.
    ys = [pt[1] for route in routes for seg in route.segments for pt in seg]
    tops = [b.y for b in boxes] + ys
    bottoms = [b.y + b.h for b in boxes] + ys
    for route in routes:
        if route.label_at is not None:
            tops.append(route.label_at[1] - label_h / 2)
            bottoms.append(route.label_at[1] + label_h / 2)
    if tops and min(tops) < top:
        _translate(boxes, routes, top - min(tops))
        bottoms = [value + top - min(tops) for value in bottoms]
    header_w = MARGIN + measure(title_text, TITLE_SIZE, True) + LEGEND_GAP + _legend_width(measure) + MARGIN
    width = max(content_right + MARGIN, header_w)
    height = max(bottoms, default=top + 30) + MARGIN
    return _Layout(width, height, title_text, boxes, routes)


def _translate(boxes: Sequence[_Box], routes: Sequence[_Route], dy: float) -> None:
    def move(p: Point) -> Point:
        return (p[0], p[1] + dy)

    for box in boxes:
        box.y += dy
    for route in routes:
        route.segments = [(move(a), move(b), move(c), move(d)) for a, b, c, d in route.segments]
        route.tip = move(route.tip)
        if route.label_at is not None:
            route.label_at = move(route.label_at)


def _separate_labels(routes: Sequence[_Route], measure: Measure) -> None:
    """Move edge labels that would overlap apart vertically, as little as possible."""
    placed = [r for r in routes if r.label is not None and r.label_at is not None]
    spans: list[tuple[float, float, _Route]] = []
    for r in placed:
        assert r.label is not None and r.label_at is not None
        half = (measure(r.label, EDGE_LABEL_SIZE, False) + 2 * EDGE_LABEL_PAD) / 2
        spans.append((r.label_at[0] - half, r.label_at[0] + half, r))
    spans.sort(key=lambda s: (s[0], s[1], s[2].label_at))
    clusters: list[list[_Route]] = []
    reach = float("-inf")
    for left, right, route in spans:
        if left >= reach:
            clusters.append([])
        clusters[-1].append(route)
        reach = max(reach, right)
    step = EDGE_LABEL_SIZE + 2 * EDGE_LABEL_PAD + 1
    for cluster in clusters:
        if len(cluster) < 2:
            continue
        cluster.sort(key=lambda r: (r.label_at or (0.0, 0.0))[::-1])
        ys = [(r.label_at or (0.0, 0.0))[1] for r in cluster]
        fitted = _isotonic([value - i * step for i, value in enumerate(ys)], [1.0] * len(ys))
        for i, (route, value) in enumerate(zip(cluster, fitted, strict=True)):
            x = (route.label_at or (0.0, 0.0))[0]
            route.label_at = (x, value + i * step)


def _s_curve(a: Point, b: Point) -> Cubic:
    """A cubic from ``a`` to ``b`` leaving and arriving horizontally."""
    dx = (b[0] - a[0]) * 0.5
    return (a, (a[0] + dx, a[1]), (b[0] - dx, b[1]), b)


def _bezier_point(curve: Cubic, t: float) -> Point:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = curve
    u = 1 - t
    return (
        u**3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x3,
        u**3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t**3 * y3,
    )


def _arrowhead(route: _Route) -> list[Point]:
    """The triangle from the end of the path to the tip."""
    (bx, by), (tx, ty) = route.segments[-1][3], route.tip
    length = max(((tx - bx) ** 2 + (ty - by) ** 2) ** 0.5, 1e-9)
    ux, uy = (tx - bx) / length, (ty - by) / length
    return [
        (tx, ty),
        (bx - uy * ARROW_HALF_W, by + ux * ARROW_HALF_W),
        (bx + uy * ARROW_HALF_W, by - ux * ARROW_HALF_W),
    ]


# --- SVG ----------------------------------------------------------------------------------------------


def to_svg(graph: Graph, *, title: str | None = None) -> str:
    """The graph as a standalone SVG document (laid out here, no Graphviz)."""
    layout = _layout(graph, estimate_width, title)
    w, h = layout.width, layout.height
    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_fmt(w)}" height="{_fmt(h)}" '
        f'viewBox="0 0 {_fmt(w)} {_fmt(h)}" font-family="{_xml(FONT_FAMILY)}" role="img" '
        f'aria-label="{_xml(layout.title)}">',
        f"<title>{_xml(layout.title)}</title>",
        f'<rect class="background" x="0" y="0" width="{_fmt(w)}" height="{_fmt(h)}" fill="{COLORS["background"]}"/>',
    ]
    # Title and legend.
    baseline = MARGIN + TITLE_SIZE
    out.append('<g class="legend">')
    out.append(
        f'<text class="title" x="{_fmt(MARGIN)}" y="{_fmt(baseline)}" font-size="{_fmt(TITLE_SIZE)}" '
        f'font-weight="bold" fill="{COLORS["text"]}">{_xml(layout.title)}</text>'
    )
    x = layout.legend_x(estimate_width)
    for kind, text in LEGEND_ITEMS:
        out.append(
            f'<rect class="legend-swatch {kind}" x="{_fmt(x)}" y="{_fmt(baseline - LEGEND_SWATCH_H + 2)}" '
            f'width="{_fmt(LEGEND_SWATCH_W)}" height="{_fmt(LEGEND_SWATCH_H)}" rx="{_fmt(min(CORNER[kind], 5))}" '
            f'fill="{FILL[kind]}" stroke="{STROKE[kind]}" stroke-width="1.2"/>'
        )
        x += LEGEND_SWATCH_W + 6
        out.append(
            f'<text x="{_fmt(x)}" y="{_fmt(baseline)}" font-size="{_fmt(SUB_SIZE + 1)}" '
            f'fill="{COLORS["muted"]}">{text}</text>'
        )
        x += estimate_width(text, SUB_SIZE + 1) + 16
    out.append("</g>")
    if not layout.boxes:
        out.append(
            f'<text x="{_fmt(MARGIN)}" y="{_fmt(MARGIN + TITLE_BAND + 14)}" font-size="{_fmt(LABEL_SIZE)}" '
            f'fill="{COLORS["muted"]}">(no lineage)</text>'
        )
    # Edges, then their labels (over every edge), then the boxes on top.
    out.append(f'<g class="edges" fill="none" stroke="{COLORS["edge"]}" stroke-width="1.4">')
    for route in layout.routes:
        d = f"M{_fmt(route.segments[0][0][0])},{_fmt(route.segments[0][0][1])}"
        for _, c1, c2, p in route.segments:
            d += f" C{_fmt(c1[0])},{_fmt(c1[1])} {_fmt(c2[0])},{_fmt(c2[1])} {_fmt(p[0])},{_fmt(p[1])}"
        head = " ".join(f"{_fmt(px)},{_fmt(py)}" for px, py in _arrowhead(route))
        out.append(
            f'<g class="edge" data-source="{_xml(route.link.source)}" data-target="{_xml(route.link.target)}">'
            f"<title>{_xml(route.tooltip)}</title>"
            f'<path class="edge-path" d="{d}"/>'
            f'<polygon class="arrowhead" points="{head}" fill="{COLORS["edge"]}" stroke="none"/></g>'
        )
    out.append("</g>")
    out.append(f'<g class="edge-labels" font-size="{_fmt(EDGE_LABEL_SIZE)}" fill="{COLORS["muted"]}">')
    for route in layout.routes:
        if route.label is None or route.label_at is None:
            continue
        lx, ly = route.label_at
        lw = estimate_width(route.label, EDGE_LABEL_SIZE) + 2 * EDGE_LABEL_PAD
        lh = EDGE_LABEL_SIZE + 2 * EDGE_LABEL_PAD
        out.append(
            f'<g class="edge-label"><title>{_xml(route.tooltip)}</title>'
            f'<rect class="edge-label-bg" x="{_fmt(lx - lw / 2)}" y="{_fmt(ly - lh / 2)}" width="{_fmt(lw)}" '
            f'height="{_fmt(lh)}" rx="3" fill="{COLORS["background"]}" fill-opacity="0.88"/>'
            f'<text x="{_fmt(lx)}" y="{_fmt(ly + EDGE_LABEL_SIZE * 0.35)}" text-anchor="middle">'
            f"{_xml(route.label)}</text></g>"
        )
    out.append("</g>")
    out.append('<g class="nodes">')
    for box in layout.boxes:
        kind = box.node.kind
        out.append(f'<g class="node {kind}" data-id="{_xml(box.node.id)}">')
        out.append(f"<title>{_xml(box.tooltip)}</title>")
        out.append(
            f'<rect class="node-box" x="{_fmt(box.x)}" y="{_fmt(box.y)}" width="{_fmt(box.w)}" '
            f'height="{_fmt(box.h)}" rx="{_fmt(CORNER[kind])}" fill="{FILL[kind]}" stroke="{STROKE[kind]}" '
            f'stroke-width="1.4"/>'
        )
        label_y = box.cy + LABEL_SIZE * 0.35 - (6.5 if box.sub else 0)
        out.append(
            f'<text class="label" x="{_fmt(box.cx)}" y="{_fmt(label_y)}" font-size="{_fmt(LABEL_SIZE)}" '
            f'text-anchor="middle" fill="{COLORS["text"]}">{_xml(box.text)}</text>'
        )
        if box.sub:
            out.append(
                f'<text class="namespace" x="{_fmt(box.cx)}" y="{_fmt(box.cy + 6.5 + SUB_SIZE * 0.35)}" '
                f'font-size="{_fmt(SUB_SIZE)}" text-anchor="middle" fill="{COLORS["muted"]}">'
                f"{_xml(box.sub)}</text>"
            )
        out.append("</g>")
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- PNG ----------------------------------------------------------------------------------------------

_MEASURE_SCALE = 4.0  # PNG text is measured at 4x size for sub-pixel accuracy


@functools.lru_cache(maxsize=64)
def _png_font(size_px: int, bold: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans if the system has it (it covers far more scripts), else Pillow's built-in font."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size_px)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size_px)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


_BITMAP_PX = 11.0  # the font size Pillow's fixed-size bitmap font amounts to


def _png_measure(text: str, size: float, bold: bool) -> float:
    from PIL import ImageFont

    font = _png_font(round(size * _MEASURE_SCALE), bold)
    if isinstance(font, ImageFont.FreeTypeFont):
        return float(font.getlength(text)) / _MEASURE_SCALE
    return float(font.getlength(_latin1(text))) * size / _BITMAP_PX  # drawn scaled, see _png_text


def _latin1(text: str) -> str:
    """What a bitmap font can draw: Latin-1 only."""
    return text.replace("…", "...").encode("latin-1", "replace").decode("latin-1")


def to_png(graph: Graph, *, title: str | None = None, scale: float = 2.0) -> bytes:
    """The graph as a PNG image, the same layout as :func:`to_svg` drawn with Pillow.

    ``scale`` is pixels per layout unit (2 suits high-density screens); very large graphs are scaled
    down to stay within 16000 pixels a side.
    """
    from PIL import Image, ImageDraw

    layout = _layout(graph, _png_measure, title)
    scale = max(0.25, min(scale, 16000 / layout.width, 16000 / layout.height))
    final = (max(1, round(layout.width * scale)), max(1, round(layout.height * scale)))
    supersample = 2 if final[0] * final[1] * 4 <= 24_000_000 else 1
    k = scale * supersample
    image = Image.new("RGB", (final[0] * supersample, final[1] * supersample), COLORS["background"])
    draw = ImageDraw.Draw(image)

    def pt(p: Point) -> tuple[float, float]:
        return (p[0] * k, p[1] * k)

    def text(
        at: Point, value: str, size: float, color: str, *, bold: bool = False, anchor: str = "ms"
    ) -> None:
        size_px = max(1, round(size * k))
        _png_text(draw, (at[0] * k, at[1] * k), value, _png_font(size_px, bold), size_px, color, anchor)

    baseline = MARGIN + TITLE_SIZE
    text((MARGIN, baseline), layout.title, TITLE_SIZE, COLORS["text"], bold=True, anchor="ls")
    x = layout.legend_x(_png_measure)
    for kind, label in LEGEND_ITEMS:
        top = baseline - LEGEND_SWATCH_H + 2
        draw.rounded_rectangle(
            [pt((x, top)), pt((x + LEGEND_SWATCH_W, top + LEGEND_SWATCH_H))],
            radius=min(CORNER[kind], 5) * k,
            fill=FILL[kind],
            outline=STROKE[kind],
            width=max(1, round(1.2 * k)),
        )
        x += LEGEND_SWATCH_W + 6
        text((x, baseline), label, SUB_SIZE + 1, COLORS["muted"], anchor="ls")
        x += _png_measure(label, SUB_SIZE + 1, False) + 16
    if not layout.boxes:
        text((MARGIN, MARGIN + TITLE_BAND + 14), "(no lineage)", LABEL_SIZE, COLORS["muted"], anchor="ls")

    line_w = max(1, round(1.4 * k))
    for route in layout.routes:
        polyline: list[tuple[float, float]] = [pt(route.segments[0][0])]
        for segment in route.segments:
            if segment[0] == segment[1] and segment[2] == segment[3]:
                polyline.append(pt(segment[3]))
                continue
            steps = 24
            polyline.extend(pt(_bezier_point(segment, i / steps)) for i in range(1, steps + 1))
        draw.line(polyline, fill=COLORS["edge"], width=line_w, joint="curve")
        draw.polygon([pt(p) for p in _arrowhead(route)], fill=COLORS["edge"])
    for route in layout.routes:
        if route.label is None or route.label_at is None:
            continue
        lx, ly = route.label_at
        lw = _png_measure(route.label, EDGE_LABEL_SIZE, False) + 2 * EDGE_LABEL_PAD
        lh = EDGE_LABEL_SIZE + 2 * EDGE_LABEL_PAD
        draw.rounded_rectangle(
            [pt((lx - lw / 2, ly - lh / 2)), pt((lx + lw / 2, ly + lh / 2))],
            radius=3 * k,
            fill=COLORS["background"],
        )
        text((lx, ly + EDGE_LABEL_SIZE * 0.35), route.label, EDGE_LABEL_SIZE, COLORS["muted"])
    for box in layout.boxes:
        kind = box.node.kind
        draw.rounded_rectangle(
            [pt((box.x, box.y)), pt((box.x + box.w, box.y + box.h))],
            radius=CORNER[kind] * k,
            fill=FILL[kind],
            outline=STROKE[kind],
            width=line_w,
        )
        label_y = box.cy + LABEL_SIZE * 0.35 - (6.5 if box.sub else 0)
        text((box.cx, label_y), box.text, LABEL_SIZE, COLORS["text"])
        if box.sub:
            text((box.cx, box.cy + 6.5 + SUB_SIZE * 0.35), box.sub, SUB_SIZE, COLORS["muted"])

    if supersample > 1:
        image = image.reduce(supersample)  # a box filter: each pixel the mean of its 2x2 samples
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_text(
    draw: ImageDraw.ImageDraw,
    at: tuple[float, float],
    value: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size_px: int,
    color: str,
    anchor: str,
) -> None:
    """Text at a baseline point; ``anchor`` is ``ms`` (centred) or ``ls`` (left-aligned)."""
    from PIL import Image, ImageDraw, ImageFont

    if isinstance(font, ImageFont.FreeTypeFont):
        draw.text(at, value, font=font, fill=color, anchor=anchor)
        return
    # A fixed-size bitmap font (Pillow without FreeType): draw it at its size, then scale it to ours.
    value = _latin1(value)
    left, top, right, bottom = (int(v) for v in draw.textbbox((0, 0), value, font=font))
    if right <= left or bottom <= top:
        return
    mask = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(mask).text((-left, -top), value, font=font, fill=255)
    factor = size_px / _BITMAP_PX
    mask = mask.resize((max(1, round(mask.width * factor)), max(1, round(mask.height * factor))))
    x = at[0] - mask.width / 2 if anchor == "ms" else at[0]
    draw.bitmap((round(x), round(at[1] - mask.height)), mask, fill=color)


# --- DOT and Mermaid ------------------------------------------------------------------------------------


def _dot_string(text: str) -> str:
    escaped = _INVALID_XML.sub("\ufffd", text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n") + '"'


def to_dot(graph: Graph, *, title: str | None = None) -> str:
    """The graph as Graphviz DOT (``rankdir=LR``), for ``dot -Tsvg`` or any Graphviz viewer."""
    nodes, links = _normalise(graph)
    show_ns = _show_namespaces(nodes)
    heading = _clean(title if title is not None else _default_title(graph, nodes, links))
    font = _dot_string("Helvetica,Arial,sans-serif")
    lines = [
        "digraph lineage {",
        f'  graph [rankdir=LR, bgcolor="{COLORS["background"]}", fontname={font}, fontsize=14, '
        f"label={_dot_string(heading)}, labelloc=t, labeljust=l, nodesep=0.25, ranksep=0.7];",
        f'  node [fontname={font}, fontsize=11, penwidth=1.3, fontcolor="{COLORS["text"]}"];',
        f'  edge [fontname={font}, fontsize=9, color="{COLORS["edge"]}", fontcolor="{COLORS["muted"]}", '
        "arrowsize=0.7];",
    ]
    for node in nodes:
        label = shorten(_display_label(node), MAX_LABEL_W, LABEL_SIZE)
        if show_ns[node.kind]:
            label += "\n" + shorten(_clean(node.namespace), MAX_LABEL_W, SUB_SIZE)
        style = "rounded,filled" if node.kind == "dataset" else "filled"
        lines.append(
            f'  {_dot_string(node.id)} [label={_dot_string(label)}, shape=box, style="{style}", '
            f'fillcolor="{FILL[node.kind]}", color="{STROKE[node.kind]}", tooltip={_dot_string(_tooltip(node))}];'
        )
    for link in links:
        attrs = (
            f" [label={_dot_string(shorten(link.label, MAX_EDGE_LABEL_W, EDGE_LABEL_SIZE))}]"
            if link.label
            else ""
        )
        lines.append(f"  {_dot_string(link.source)} -> {_dot_string(link.target)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_MERMAID_ESCAPES = {
    '"': "#quot;",
    "#": "#35;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "`": "#96;",
    "|": "#124;",
}
_MERMAID_SPECIAL = re.compile("[" + re.escape("".join(_MERMAID_ESCAPES)) + "]")


def _mermaid_text(text: str) -> str:
    return _MERMAID_SPECIAL.sub(lambda m: _MERMAID_ESCAPES[m.group(0)], _clean(text))


def to_mermaid(graph: Graph, *, title: str | None = None) -> str:
    """The graph as a Mermaid ``flowchart LR``: datasets as cylinders, jobs as rectangles."""
    nodes, links = _normalise(graph)
    show_ns = _show_namespaces(nodes)
    ids = {node.id: f"n{i}" for i, node in enumerate(nodes)}
    heading = _clean(title if title is not None else _default_title(graph, nodes, links))
    lines = ["flowchart LR", f"  %% {heading.replace('{', '(').replace('}', ')')}"]
    for node in nodes:
        label = _mermaid_text(shorten(_display_label(node), MAX_LABEL_W, LABEL_SIZE))
        if show_ns[node.kind]:
            label += (
                "<br/><small>"
                + _mermaid_text(shorten(_clean(node.namespace), MAX_LABEL_W, SUB_SIZE))
                + "</small>"
            )
        shape = f'[("{label}")]' if node.kind == "dataset" else f'["{label}"]'
        lines.append(f"  {ids[node.id]}{shape}")
    for link in links:
        arrow = "-->"
        if link.label:
            arrow += f'|"{_mermaid_text(shorten(link.label, MAX_EDGE_LABEL_W, EDGE_LABEL_SIZE))}"|'
        lines.append(f"  {ids[link.source]} {arrow} {ids[link.target]}")
    for kind, _ in LEGEND_ITEMS:
        lines.append(f"  classDef {kind} fill:{FILL[kind]},stroke:{STROKE[kind]},color:{COLORS['text']}")
    for kind, _ in LEGEND_ITEMS:
        members = [ids[node.id] for node in nodes if node.kind == kind]
        if members:
            lines.append(f"  class {','.join(members)} {kind}")
    return "\n".join(lines) + "\n"


# --- Entry point ----------------------------------------------------------------------------------------


def render(graph: Graph, fmt: Format, *, title: str | None = None) -> bytes:
    """The graph drawn as ``fmt``: ``dot``, ``mermaid`` or ``svg`` (UTF-8 text), or ``png``.

    ``title`` replaces the default heading (the node and edge counts).
    """
    if fmt == "png":
        return to_png(graph, title=title)
    renderers: dict[str, Callable[..., str]] = {"dot": to_dot, "mermaid": to_mermaid, "svg": to_svg}
    if fmt not in renderers:
        raise ValueError(f"unknown lineage format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return renderers[fmt](graph, title=title).encode("utf-8")


__all__ = [
    "FORMATS",
    "Format",
    "estimate_width",
    "render",
    "shorten",
    "to_dot",
    "to_mermaid",
    "to_png",
    "to_svg",
]
