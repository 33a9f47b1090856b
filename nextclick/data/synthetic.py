"""A seeded synthetic shop: the built-in default data (no download).

The catalogue has categories with Zipf-like popularity inside each; every item has a few
"related" items in its category (accessories, the next model up) that visitors often click next.
An anonymous session starts in one category and browses it -- following related items or picking
popular ones -- and its intent drifts: with probability ``p_shift`` per click the visitor switches
category, most often to the category's "partner" (the power-tools shopper who turns to baby
clothes). So the next click depends on the current click and on the session's current intent,
which sequence models can learn and global popularity cannot.

Generation is vectorized over sessions (one numpy step per click position, no Python loop per
session). :func:`generate_shop` returns a small shop as two frames; :func:`write_shop` writes a shop
of any size (``SIZES["otto"]``: OTTO's size) chunk by chunk to a directory of Parquet parts.
Leaf module: numpy + polars.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from nextclick.errors import NextclickError

log = logging.getLogger(__name__)

CATEGORY_NAMES = [
    "power tools",
    "baby clothes",
    "garden",
    "kitchen",
    "laptops",
    "phones",
    "running shoes",
    "books",
    "toys",
    "camping",
    "bicycles",
    "coffee",
    "pet food",
    "lighting",
    "bathroom",
    "board games",
    "headphones",
    "paint",
    "vitamins",
    "office chairs",
    "cameras",
    "watches",
    "yoga",
    "fishing",
]


@dataclass
class ShopConfig:
    n_items: int = 2_000
    n_categories: int = 16
    n_sessions: int = 20_000
    n_users: int | None = None  # default: one user per 3 sessions
    days: float = 14.0
    mean_length: float = 6.0  # mean session length (>= 2)
    max_length: int = 50
    zipf_a: float = 1.1  # popularity skew inside a category and across categories
    n_related: int = 3  # related items per item
    p_related: float = 0.55  # next click follows a related item of the current one
    p_shift: float = 0.12  # intent drift: switch category
    p_partner: float = 0.7  # a switch goes to the category's partner (else a random one)
    mean_gap_seconds: float = 45.0  # between clicks of one session
    start_time: float = 1_700_000_000.0
    seed: int = 0


@dataclass
class Shop:
    clicks: pl.DataFrame  # UserId, SessionId, ItemId, Time
    items: pl.DataFrame  # ItemId, Category, CategoryName, Title, Price
    config: ShopConfig

    def category_of(self, item_ids: np.ndarray) -> np.ndarray:
        ids = self.items.get_column("ItemId").to_numpy()
        cats = self.items.get_column("CategoryName").to_numpy()
        order = np.argsort(ids)
        pos = order[np.searchsorted(ids, np.asarray(item_ids), sorter=order)]
        return cats[pos]


def generate_shop(cfg: ShopConfig | None = None, **overrides: object) -> Shop:
    """Generate the synthetic shop (see module docstring). Same config, same shop."""
    cfg = cfg or ShopConfig()
    if overrides:
        cfg = ShopConfig(**{**cfg.__dict__, **overrides})
    _check(cfg)
    rng = np.random.default_rng(cfg.seed)  # drawn from in this order: catalogue, sessions, users and times
    cat = _catalogue(cfg, rng)
    lengths, items = _sessions(cfg, rng, cat)
    return _frames(cfg, rng, cat, lengths, items)


def _check(cfg: ShopConfig) -> None:
    if cfg.n_items < cfg.n_categories * 4:
        raise ValueError("n_items must be at least 4 per category")
    if cfg.mean_length < 2:
        raise ValueError("mean_length must be >= 2")


@dataclass
class _Catalogue:
    cat_of: np.ndarray  # (n_items,) category of each item, ascending
    global_cdf: np.ndarray  # (n_items,) category c's items share (c, c+1], by popularity
    cat_p: np.ndarray  # (n_categories,) probability of each category
    partner: np.ndarray  # (n_categories,) the category a drifting visitor most often turns to
    related: np.ndarray  # (n_items, n_related) related items, in the item's category

    def pick_in_cat(self, c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item of each category in ``c``, drawn by popularity."""
        return np.minimum(np.searchsorted(self.global_cdf, c + rng.random(c.size)), self.cat_of.size - 1)


def _catalogue(cfg: ShopConfig, rng: np.random.Generator) -> _Catalogue:
    """Categories, popularity inside each (Zipf-like), category partners and related items."""
    n_cat, n_items = cfg.n_categories, cfg.n_items
    # catalogue: category of each item, sorted by category; popularity rank inside the category
    cat_of = np.sort(rng.integers(0, n_cat, size=n_items))
    cat_of[:n_cat] = np.arange(n_cat)  # every category non-empty
    cat_of = np.sort(cat_of)
    cat_start = np.searchsorted(cat_of, np.arange(n_cat))
    rank_in_cat = np.arange(n_items) - cat_start[cat_of]
    w = 1.0 / (rank_in_cat + 1.0) ** cfg.zipf_a
    csum = np.cumsum(w)
    before = np.concatenate([[0.0], csum])[cat_start]
    total = np.add.reduceat(w, cat_start)
    global_cdf = cat_of + (csum - before[cat_of]) / total[cat_of]  # category c lives in (c, c+1]
    cat_w = 1.0 / (np.arange(n_cat) + 1.0) ** cfg.zipf_a
    cat_p = cat_w / cat_w.sum()
    partner = rng.permutation(n_cat)
    partner = np.where(partner == np.arange(n_cat), (partner + 1) % n_cat, partner)
    # related items: random items of the same category, biased to popular ones
    rel_r = rng.random((n_items, cfg.n_related))
    related = np.searchsorted(global_cdf, cat_of[:, None] + rel_r)
    related = np.minimum(related, n_items - 1)
    return _Catalogue(cat_of, global_cdf, cat_p, partner, related)


def _sessions(cfg: ShopConfig, rng: np.random.Generator, cat: _Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """Session lengths (S,) and their concatenated item indices: every session walks the catalogue
    at once, one click position per step."""
    S, n_cat = cfg.n_sessions, cfg.n_categories
    lengths = np.minimum(2 + rng.geometric(1.0 / (cfg.mean_length - 1.0), size=S) - 1, cfg.max_length)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    items = np.empty(int(offsets[-1]), dtype=np.int64)
    cur_cat = rng.choice(n_cat, size=S, p=cat.cat_p)
    cur = cat.pick_in_cat(cur_cat, rng)
    items[offsets[:-1]] = cur
    for t in range(1, int(lengths.max())):
        act = np.flatnonzero(lengths > t)
        if act.size == 0:
            break
        u = rng.random(act.size)
        c = cur_cat[act].copy()
        nxt = np.empty(act.size, dtype=np.int64)
        shift = u < cfg.p_shift
        follow = (~shift) & (u < cfg.p_shift + cfg.p_related)
        other = ~(shift | follow)
        if shift.any():
            to_partner = rng.random(int(shift.sum())) < cfg.p_partner
            rand_cat = rng.choice(n_cat, size=int(shift.sum()), p=cat.cat_p)
            c[shift] = np.where(to_partner, cat.partner[c[shift]], rand_cat)
            nxt[shift] = cat.pick_in_cat(c[shift], rng)
        if follow.any():
            nxt[follow] = cat.related[cur[act[follow]], rng.integers(0, cfg.n_related, int(follow.sum()))]
        if other.any():
            nxt[other] = cat.pick_in_cat(c[other], rng)
        cur_cat[act], cur[act] = c, nxt
        items[offsets[act] + t] = nxt
    return lengths, items


def _click_times(cfg: ShopConfig, rng: np.random.Generator, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The user of every session (S,), the session of every click and the click times (floored
    unix seconds), drawn in this order: users, session starts, gaps between clicks."""
    S = lengths.size
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n_users = cfg.n_users or max(cfg.n_sessions // 3, 1)
    user = rng.integers(0, n_users, size=S)
    start = cfg.start_time + rng.random(S) * cfg.days * 86_400.0
    gaps = np.minimum(rng.exponential(cfg.mean_gap_seconds, size=int(offsets[-1])), 1_200.0) + 1.0
    sess_of = np.repeat(np.arange(S), lengths)
    gaps[offsets[:-1]] = 0.0
    csum_g = np.cumsum(gaps)
    t_in = csum_g - np.repeat(csum_g[offsets[:-1]], lengths)
    return user, sess_of, np.floor(start[sess_of] + t_in)


def _category_names(n_cat: int) -> list[str]:
    return [
        CATEGORY_NAMES[c % len(CATEGORY_NAMES)] + ("" if c < len(CATEGORY_NAMES) else f" {c // len(CATEGORY_NAMES)}")
        for c in range(n_cat)
    ]


# what the items of each named category are called, for readable generated titles
_NOUNS = {
    "power tools": ("cordless drill", "impact driver", "circular saw", "angle grinder", "jigsaw", "sander"),
    "baby clothes": ("romper", "sleepsuit", "bodysuit", "knitted cardigan", "sun hat", "bib set"),
    "garden": ("hose reel", "pruning shears", "rake", "planter", "lawn feed", "watering can"),
    "kitchen": ("chef's knife", "frying pan", "stand mixer", "kettle", "cutting board", "saucepan"),
    "laptops": ("ultrabook", "gaming laptop", "2-in-1 laptop", "business laptop", "chromebook", "workstation"),
    "phones": ("smartphone", "phone case", "screen protector", "fast charger", "foldable phone", "power bank"),
    "running shoes": ("trail shoe", "road shoe", "racing flat", "stability shoe", "track spike", "recovery sandal"),
    "books": ("crime novel", "cookbook", "travel guide", "biography", "fantasy saga", "poetry collection"),
    "toys": ("building set", "plush bear", "puzzle", "toy train", "doll house", "kite"),
    "camping": ("dome tent", "sleeping bag", "camp stove", "head torch", "cool box", "folding chair"),
    "bicycles": ("road bike", "mountain bike", "helmet", "bike lock", "saddle", "pump"),
    "coffee": ("espresso beans", "filter coffee", "grinder", "moka pot", "french press", "milk frother"),
    "pet food": ("dry dog food", "cat pouches", "dog treats", "bird seed", "fish flakes", "puppy food"),
    "lighting": ("floor lamp", "desk lamp", "LED strip", "pendant light", "smart bulb", "wall light"),
    "bathroom": ("bath towel", "shower head", "bath mat", "mirror cabinet", "soap dispenser", "towel rail"),
    "board games": ("strategy game", "party game", "card game", "co-op game", "chess set", "dice set"),
    "headphones": ("noise-cancelling headphones", "earbuds", "studio headphones", "sports earphones",
                   "DJ headphones", "headset"),
    "paint": ("wall paint", "primer", "roller set", "brush set", "wood stain", "masking tape"),
    "vitamins": ("vitamin D", "multivitamin", "magnesium", "omega-3", "vitamin C", "zinc"),
    "office chairs": ("ergonomic chair", "mesh chair", "task chair", "kneeling chair", "gaming chair", "stool"),
    "cameras": ("mirrorless camera", "compact camera", "action camera", "prime lens", "zoom lens", "tripod"),
    "watches": ("dive watch", "smartwatch", "chronograph", "field watch", "dress watch", "fitness band"),
    "yoga": ("yoga mat", "yoga block", "strap", "bolster", "yoga leggings", "meditation cushion"),
    "fishing": ("spinning rod", "reel", "lure set", "tackle box", "landing net", "waders"),
}
_BRANDS = ("Nordvik", "Alba", "Kestrel", "Lumo", "Brava", "Oakridge", "Vela", "Tundra", "Pico", "Marlow", "Sora", "Helix")
_ADJECTIVES = ("classic", "pro", "compact", "deluxe", "eco", "lite", "max", "sport", "smart", "essential")
_PRICE_MEDIAN = 25.0  # the median price of a category, before its own factor


def _titles(cfg: ShopConfig, cat: _Catalogue) -> tuple[pl.Series, np.ndarray]:
    """A readable title and a price per item, drawn from their own generator (the clicks are
    unchanged): brand, adjective and a noun of the item's category, with a model number."""
    rng = np.random.default_rng([cfg.seed, 1])
    names = _category_names(cfg.n_categories)
    nouns = [_NOUNS.get(n.rsplit(" ", 1)[0] if n not in _NOUNS else n, ("item",)) for n in names]
    n = cat.cat_of.size
    noun_of = [nouns[c][j % len(nouns[c])] for c in range(cfg.n_categories) for j in range(6)]
    pick = cat.cat_of * 6 + rng.integers(0, 6, n)
    parts = [pl.Series(_BRANDS).gather(rng.integers(0, len(_BRANDS), n)), pl.Series(noun_of).gather(pick),
         pl.Series(_ADJECTIVES).gather(rng.integers(0, len(_ADJECTIVES), n)), pl.Series(rng.integers(10, 1000, n)).cast(pl.String)]
    titles = pl.DataFrame({str(i): p for i, p in enumerate(parts)}).select(pl.concat_str(pl.all(), separator=" ")).to_series()
    factor = np.exp(rng.normal(0.0, 1.0, cfg.n_categories))
    price = np.round(_PRICE_MEDIAN * factor[cat.cat_of] * np.exp(rng.normal(0.0, 0.5, n)), 2)
    return titles, price


def _item_table(cfg: ShopConfig, cat: _Catalogue, item_ids: np.ndarray) -> pl.DataFrame:
    """The shop's item table: id, category (number and name), a generated title and a price."""
    names = _category_names(cfg.n_categories)
    titles, price = _titles(cfg, cat)
    return pl.DataFrame(
        {
            "ItemId": item_ids.astype(np.int64),
            "Category": cat.cat_of.astype(np.int64),
            "CategoryName": pl.Series(names, dtype=pl.String).gather(cat.cat_of),
            "Title": titles,
            "Price": price,
        }
    ).sort("ItemId")


def _frames(cfg: ShopConfig, rng: np.random.Generator, cat: _Catalogue, lengths: np.ndarray, items: np.ndarray) -> Shop:
    """Users and click times drawn for the sessions, and the shop's own item ids: the two frames."""
    user, sess_of, times = _click_times(cfg, rng, lengths)
    item_ids = 100_000 + 7 * rng.permutation(cfg.n_items)  # the shop's own ids: not 1..n
    clicks = pl.DataFrame(
        {
            "UserId": user[sess_of].astype(np.int64),
            "SessionId": sess_of.astype(np.int64),
            "ItemId": item_ids[items].astype(np.int64),
            "Time": times,
        }
    ).sort(["Time", "SessionId"])
    return Shop(clicks, _item_table(cfg, cat, item_ids), cfg)


# Named sizes for `nextclick generate --size`: "otto" is the size of OTTO's public session log
# (1.86M items, 12.9M sessions, 216.7M clicks over four weeks); "otto-tenth" a tenth of it.
SIZES: dict[str, dict[str, Any]] = {
    "small": {},
    "otto": {
        "n_items": 1_855_603,
        "n_sessions": 12_899_779,
        "n_categories": 512,
        "mean_length": 16.8,
        "max_length": 500,
        "days": 28.0,
    },
    "otto-tenth": {
        "n_items": 185_560,
        "n_sessions": 1_289_978,
        "n_categories": 256,
        "mean_length": 16.8,
        "max_length": 500,
        "days": 28.0,
    },
}


def shop_size(name: str, **overrides: Any) -> ShopConfig:
    """The :class:`ShopConfig` of a named size (see ``SIZES``), with ``overrides`` on top."""
    if name not in SIZES:
        raise NextclickError(f"--size must be one of {', '.join(SIZES)}, got {name!r}")
    return ShopConfig(**{**SIZES[name], **overrides})


@dataclass
class ShopCatalogue:
    """What every chunk of a chunked shop shares: the catalogue and the shop's item ids."""

    cat: _Catalogue
    item_ids: np.ndarray  # (n_items,) the shop's own id of every item index


def shop_catalogue(cfg: ShopConfig) -> ShopCatalogue:
    """The catalogue of a chunked shop, drawn from ``cfg.seed`` alone."""
    _check(cfg)
    rng = np.random.default_rng(cfg.seed)
    cat = _catalogue(cfg, rng)
    return ShopCatalogue(cat, 100_000 + 7 * rng.permutation(cfg.n_items))


def shop_chunk(cfg: ShopConfig, catalogue: ShopCatalogue, index: int, chunk_sessions: int) -> pl.DataFrame:
    """Chunk ``index`` of a chunked shop: sessions ``index * chunk_sessions`` onwards, drawn from a
    generator seeded with ``(cfg.seed, index)``, so any chunk is regenerated alone. The log is
    fixed by the config and ``chunk_sessions`` (another chunk size draws other sessions).
    Clicks in time order, with the columns of :func:`generate_shop`'s frame."""
    first = index * chunk_sessions
    n = min(chunk_sessions, cfg.n_sessions - first)
    if n <= 0:
        raise ValueError(f"chunk {index} lies past the shop's {cfg.n_sessions} sessions")
    rng = np.random.default_rng([cfg.seed, index])
    sub = ShopConfig(**{**cfg.__dict__, "n_sessions": n})
    lengths, items = _sessions(sub, rng, catalogue.cat)
    user, sess_of, times = _click_times(cfg, rng, lengths)
    return pl.DataFrame(
        {
            "UserId": user[sess_of].astype(np.int64),
            "SessionId": (first + sess_of).astype(np.int64),
            "ItemId": catalogue.item_ids[items].astype(np.int64),
            "Time": times,
        }
    ).sort(["Time", "SessionId"])


def write_shop(cfg: ShopConfig, out: str | Path, chunk_sessions: int = 250_000, with_sessions: bool = True) -> dict[str, int]:
    """Write a chunked shop to the directory ``out``: ``clicks/part-00000.parquet``, ... (one part
    per chunk of sessions, see :func:`shop_chunk`) and ``items.parquet`` beside the parts' folder.
    Only one chunk is in memory at a time. Returns the counts written."""
    if chunk_sessions < 1:
        raise NextclickError(f"--chunk-sessions must be positive, got {chunk_sessions}")
    out = Path(out)
    parts = out / "clicks"
    if parts.exists() and any(parts.iterdir()):
        raise NextclickError(f"--out {out}: {parts} is not empty; choose a new directory")
    parts.mkdir(parents=True, exist_ok=True)
    catalogue = shop_catalogue(cfg)
    _item_table(cfg, catalogue.cat, catalogue.item_ids).write_parquet(out / "items.parquet")
    n_chunks = -(-cfg.n_sessions // chunk_sessions)
    clicks = 0
    for k in range(n_chunks):
        df = shop_chunk(cfg, catalogue, k, chunk_sessions)
        if not with_sessions:
            df = df.drop("SessionId")
        df.write_parquet(parts / f"part-{k:05d}.parquet", compression="lz4")
        clicks += df.height
        log.info("part %d/%d: %d clicks", k + 1, n_chunks, df.height)
    return {"parts": n_chunks, "sessions": cfg.n_sessions, "items": cfg.n_items, "clicks": clicks}
