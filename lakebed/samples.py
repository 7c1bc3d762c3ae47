"""Deterministic, real-looking sample data: the demo's shipped files and the benchmarks' large inputs.

``python -m lakebed.samples DEST`` recreates the shipped structured samples (the committed copies live in
``lakebed/examples/shop/data``). The same generators, asked for more rows, make the benchmarks' inputs.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SAMPLE_ROOT = Path(__file__).parent / "examples" / "shop" / "data"  # the shop example's data
STRUCTURED = SAMPLE_ROOT
MEDIA = SAMPLE_ROOT / "media"
STREAM = SAMPLE_ROOT / "stream"
_EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "PL", "SE", "GB", "US", "CA"]
_FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Radia",
    "Frances",
    "Linus",
    "Hedy",
    "Tim",
    "Sophie",
    "John",
    "Katherine",
    "Niklaus",
    "Leslie",
    "Shafi",
    "Yukihiro",
]
_LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Allen",
    "Torvalds",
    "Lamarr",
    "Berners-Lee",
    "Wilson",
    "Backus",
    "Johnson",
    "Wirth",
    "Lamport",
    "Goldwasser",
    "Matsumoto",
]
_CATEGORIES = ["espresso", "filter", "grinder", "kettle", "beans", "accessories"]
_STATUSES = ["placed", "paid", "shipped", "delivered", "returned"]
_EVENTS = ["page_view", "search", "add_to_cart", "checkout", "purchase"]


def customers(n: int, *, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    first = rng.choice(_FIRST, n)
    last = rng.choice(_LAST, n)
    signup = np.datetime64("2023-01-12") + rng.integers(0, 720 * 86_400, n).astype("timedelta64[s]")
    return pa.table(
        {
            "customer_id": pa.array(np.arange(1, n + 1, dtype=np.int64)),
            "name": pa.array([f"{a} {b}" for a, b in zip(first, last, strict=True)]),
            "email": pa.array(
                [
                    f"{a.lower()}.{b.lower()}{i}@example.com"
                    for i, (a, b) in enumerate(zip(first, last, strict=True))
                ]
            ),
            "country": pa.array(rng.choice(_COUNTRIES, n)),
            "signup_date": pa.array(signup.astype("datetime64[D]")),
            "loyalty_tier": pa.array(rng.choice(["bronze", "silver", "gold"], n, p=[0.7, 0.22, 0.08])),
        }
    )


def products(n: int, *, seed: int = 11) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        category = str(rng.choice(_CATEGORIES))
        rows.append(
            {
                "sku": f"SKU-{i:05d}",
                "name": f"{category.title()} model {chr(65 + i % 26)}{i}",
                "category": category,
                "price_eur": round(float(rng.uniform(4, 900)), 2),
                "in_stock": bool(rng.random() > 0.1),
                "tags": [
                    str(t)
                    for t in rng.choice(["new", "sale", "eco", "bestseller", "bundle"], 2, replace=False)
                ],
            }
        )
    return rows


def _codes(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + each number zero-padded to ``width`` digits (vectorised ``f"{prefix}{i:0{width}d}"``)."""
    digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _pick(
    rng: np.random.Generator, values: Sequence[str], n: int, p: Sequence[float] | None = None
) -> pa.Array:
    """``n`` of ``values`` drawn like ``rng.choice(values, n, p=p)`` (the same draws), as an Arrow array."""
    return pc.take(pa.array(values, pa.string()), pa.array(rng.choice(len(values), n, p=p)))


def orders(
    n: int, *, seed: int = 13, start_id: int = 1, customers_n: int = 2_000, skus: int = 240
) -> pa.Table:
    """``n`` order lines over 2025, skewed towards recent days and loyal customers."""
    rng = np.random.default_rng(seed + start_id)
    seconds = np.sort(rng.integers(0, 365 * 86_400, n))
    quantity = rng.geometric(0.55, n).astype(np.int64)
    unit_price = np.round(rng.lognormal(3.2, 0.9, n), 2)
    return pa.table(
        {
            "order_id": pa.array(np.arange(start_id, start_id + n, dtype=np.int64)),
            "customer_id": pa.array(np.minimum(rng.zipf(1.3, n), customers_n).astype(np.int64)),
            "sku": _codes("SKU-", rng.integers(1, skus + 1, n), 5),
            "quantity": pa.array(quantity),
            "unit_price": pa.array(unit_price),
            "currency": _pick(rng, ["EUR", "USD", "GBP"], n, p=[0.7, 0.2, 0.1]),
            "status": _pick(rng, _STATUSES, n, p=[0.05, 0.1, 0.2, 0.6, 0.05]),
            "ordered_at": pa.array(
                (np.datetime64(_EPOCH.replace(tzinfo=None)) + seconds.astype("timedelta64[s]")).astype(
                    "datetime64[us]"
                ),
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def web_events(n: int, *, seed: int = 17) -> pa.Table:
    rng = np.random.default_rng(seed)
    ms = np.sort(rng.integers(0, 90 * 86_400_000, n))
    return pa.table(
        {
            "event_id": _codes("ev-", np.arange(n), 8),
            "customer_id": pa.array(rng.integers(1, 2_001, n)),
            "event_type": _pick(rng, _EVENTS, n, p=[0.6, 0.2, 0.1, 0.06, 0.04]),
            "page": _pick(rng, ["/", "/shop", "/shop/espresso", "/cart", "/checkout", "/blog"], n),
            "duration_ms": pa.array(rng.integers(50, 120_000, n)),
            "event_time": pa.array(
                (np.datetime64("2025-10-01") + ms.astype("timedelta64[ms]")).astype("datetime64[us]"),
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def shop_events(
    n: int, *, seed: int = 19, customers_n: int = 200, late_fraction: float = 0.01
) -> list[dict[str, object]]:
    """A clickstream of ``n`` events over two days in arrival order: mostly in event-time order, with
    small out-of-order jitter and a few events arriving far too late (for the feature store's watermark)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2025-06-01T00:00:00", "us")
    arrival = np.sort(rng.integers(0, 2 * 86_400_000_000, n))
    jitter = rng.integers(-120_000_000, 1, n)  # up to 2 minutes out of order
    late = rng.random(n) < late_fraction
    jitter[late] -= rng.integers(3_600_000_000, 7_200_000_000, late.sum())  # one to two hours late
    event_time = start + (arrival + jitter).astype("timedelta64[us]")
    kinds = rng.choice(["page_view", "add_to_cart", "purchase"], n, p=[0.75, 0.17, 0.08])
    amounts = np.round(rng.lognormal(3.4, 0.8, n), 2)
    return [
        {
            "event_id": f"se-{i:07d}",
            "customer_id": int(rng.integers(1, customers_n + 1)),
            "event_type": str(kind),
            "amount": float(amount) if kind == "purchase" else None,
            "event_time": f"{str(moment)}Z",
        }
        for i, (kind, amount, moment) in enumerate(zip(kinds, amounts, event_time, strict=True))
    ]


def orders_csv_batches(target_bytes: int, *, rows_per_batch: int = 200_000) -> Iterator[pa.Table]:
    """Order batches until their CSV text reaches roughly ``target_bytes`` (for benchmarks)."""
    written, start = 0, 1
    while written < target_bytes:
        batch = orders(rows_per_batch, start_id=start)
        start += rows_per_batch
        written += rows_per_batch * 82  # measured: ~82 bytes per order line as CSV
        yield batch


def write_orders_csv(path: Path, target_bytes: int) -> Path:
    """A large orders CSV of about ``target_bytes``, written in streaming batches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pacsv.CSVWriter(str(path), orders(1).schema) as writer:
        for batch in orders_csv_batches(target_bytes):
            writer.write_table(batch)
    return path


def _order_mistakes(table: pa.Table) -> pa.Table:
    """A few order lines that break the orders contract's rules (for the demo's quarantine)."""
    rows: dict[str, dict[int, object]] = {
        "quantity": {120: 0, 4_410: 5_000},
        "currency": {777: "XXX"},
        "sku": {2_500: "sku-9"},
    }
    for column, changes in rows.items():
        values = table.column(column).to_pylist()
        for index, value in changes.items():
            values[index] = value
        table = table.set_column(
            table.schema.get_field_index(column), column, pa.array(values, table.schema.field(column).type)
        )
    return table


def write_structured_samples(dest: Path = STRUCTURED) -> list[Path]:
    """The demo's structured inputs: customers (CSV), orders by month (CSV), products (JSON lines),
    web events (Parquet). About 3 MB in all."""
    dest.mkdir(parents=True, exist_ok=True)
    made = []
    path = dest / "customers.csv"
    pacsv.write_csv(customers(2_000), path)
    made.append(path)
    all_orders = _order_mistakes(orders(24_000))
    months = all_orders.column("ordered_at").to_numpy().astype("datetime64[M]")
    (dest / "orders").mkdir(exist_ok=True)
    for month in np.unique(months)[:6]:
        path = dest / "orders" / f"orders-{str(month)}.csv"
        pacsv.write_csv(all_orders.filter(pa.array(months == month)), path)
        made.append(path)
    path = dest / "products.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in products(240)))
    made.append(path)
    path = dest / "web_events.parquet"
    pq.write_table(web_events(40_000), path, compression="zstd")
    made.append(path)
    path = dest.parent / "stream" / "shop_events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in shop_events(6_000)))
    made.append(path)
    return made


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else STRUCTURED
    for made_path in write_structured_samples(target):
        print(made_path)
