"""Text columns worked on as arrow arrays and integer codes, never a Python object per row.

The one toolkit the provisioning plan, the diff, the journal and the grade passback share: a
district has millions of users, enrollments and export rows, so ids are matched by arrow's hash
and search kernels on the text columns as read from Parquet, and columns are carried as integer
codes into their few distinct values (categoricals) rather than as text. Generic: nothing here
knows what a user, a section or a grade is.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SLICE = 250_000  # rows of text handled at once where a whole column would otherwise be copied
TEXT = pa.large_string()  # what pandas' ``str`` columns hold
AT_ONCE = 1 << 18  # items per NumPy gather or arrow call on a column of codes: bounds the temporaries


# -- frames in key order ----------------------------------------------------------------------------


def sorted_by_key(rows: pd.DataFrame, distinct: bool = False) -> pd.DataFrame:
    """``rows.sort_values("key", kind="stable")`` (and ``.drop_duplicates("key")`` first if
    ``distinct``) by one stable arrow sort, and no copy of the rows when they are in order."""
    if len(rows) < 2:
        return rows
    keys = arrow_text(rows["key"])
    in_order = pc.less if distinct else pc.less_equal
    if pc.all(in_order(keys[:-1], keys[1:])).as_py():
        return rows
    order = pc.sort_indices(keys)
    if distinct:
        ordered = keys.take(order)
        repeated = pc.equal(ordered[1:], ordered[:-1]).to_numpy(zero_copy_only=False)
        del ordered
        return rows.take(order.to_numpy(zero_copy_only=False)[~np.r_[False, repeated]])
    return rows.take(order.to_numpy(zero_copy_only=False))


def in_key_order(keys: Iterable[pd.Series], kept: Iterable[np.ndarray]) -> np.ndarray:
    """The ``kept`` rows of frames with these ``keys``, as positions into the frames one after the
    other, in the stable order of their keys: what ``sorted_by_key(pd.concat(frames))`` holds, found
    by one arrow sort of the keys where they are (frames already in key order merge cheaply)."""
    keys, kept = list(keys), np.concatenate([np.empty(0, dtype=bool), *kept])
    text = pa.chunked_array([chunk for key in keys for chunk in _chunks(arrow_text(key, pa.large_string()))],
                            pa.large_string())
    kept_at = np.flatnonzero(kept)
    if not len(kept_at) or _ascending(text[kept_at[0]:kept_at[-1] + 1]):  # one part in order (a quiet night)
        return kept_at
    order = pc.sort_indices(text).to_numpy(zero_copy_only=False).view(np.int64)
    return order if len(kept_at) == len(kept) else order[kept[order]]


def _chunks(text: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return text.chunks if isinstance(text, pa.ChunkedArray) else [text]


# -- text as arrow --------------------------------------------------------------------------------


def arrow_text(values: pd.Series | Iterable, like: pa.DataType | None = None) -> pa.ChunkedArray | pa.Array:
    """Values as arrow text (of type ``like`` if given); zero-copy for pandas' arrow-backed
    ``str`` columns."""
    values = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    array = pa.array(values, from_pandas=True)
    if like is None:
        textual = pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
        like = array.type if textual else pa.string()
    return array if array.type == like else pc.cast(array, like)


def text_array(values: pd.Series | pd.Index, like: pa.DataType = pa.string()) -> pa.Array:
    """A text column as one arrow array of ``like`` (missing values null), for work done in arrow."""
    text = arrow_text(pd.Series(values) if isinstance(values, pd.Index) else values, like)
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def chunked_text(values: pd.Series) -> pa.ChunkedArray:
    """A column as chunked arrow text (``TEXT``)."""
    text = arrow_text(values, TEXT)
    return text if isinstance(text, pa.ChunkedArray) else pa.chunked_array([text])


def flat(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array of a chunked one (for the few distinct values, not for a column of millions)."""
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def as_series(array: pa.Array | pa.ChunkedArray) -> pd.Series:
    """An arrow array as a pandas column."""
    return pa.chunked_array([array]).to_pandas() if isinstance(array, pa.Array) else array.to_pandas()


def struct_field(items: pa.Array, name: str) -> pa.Array:
    """A field of struct items; all null (text) when the items are not structs (none had any field)."""
    return items.field(name) if pa.types.is_struct(items.type) else pa.nulls(len(items), pa.large_string())


def flatten(values: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """The items of a list column and the position of the row each came from (empty lists
    and missing values give none); arrow-backed lists are not copied into Python objects."""
    lists = pa.array(values, from_pandas=True)
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks() if lists.num_chunks else pa.array([], lists.type)
    items = pc.list_flatten(lists)
    parents = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
    return parents, items


def take_chunked(values: pa.ChunkedArray, at: np.ndarray) -> pa.ChunkedArray:
    """``values`` at the ascending positions ``at``, taken chunk by chunk: arrow would first join
    all the chunks into one (the result ids of millions of postings, copied whole)."""
    bounds = np.cumsum([0, *(len(chunk) for chunk in values.chunks)])
    cuts = np.searchsorted(at, bounds)
    pieces = zip(values.chunks, bounds[:-1], cuts[:-1], cuts[1:], strict=True)
    taken = [chunk.take(pa.array(at[low:high] - first)) for chunk, first, low, high in pieces]
    return pa.chunked_array(taken, values.type)


# -- vectorised lookups ---------------------------------------------------------------------------
# Text matched by arrow's hash kernels (or a binary search of keys already in order), never
# through a Python dict or a Python call per row.


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Series] | None:
    """A categorical's codes and categories: work once per category, not per row. A dictionary-
    encoded arrow column (``read_frame``'s ``arrow``) counts as one, its categories the
    dictionaries of its chunks one after the other (a value may repeat across them)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(), pd.Series(values.cat.categories)
    if not _dictionary_encoded(values):
        return None
    column = pa.array(values.array)
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    codes = np.empty(len(values), dtype=np.int32)
    row = entry = 0
    for chunk in chunks:
        indices = pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False)
        codes[row:row + len(chunk)] = np.where(indices >= 0, indices + entry, -1)
        row, entry = row + len(chunk), entry + len(chunk.dictionary)
    value_type = values.dtype.pyarrow_dtype.value_type
    return codes, as_series(pa.chunked_array([chunk.dictionary for chunk in chunks], value_type))


def _dictionary_encoded(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_dictionary(values.dtype.pyarrow_dtype)


def per_row(per_category: np.ndarray, codes: np.ndarray, missing) -> np.ndarray:
    """A category's answer for each row; ``missing`` where the row has no value."""
    if not len(per_category):
        return np.full(len(codes), missing)
    return np.where(codes >= 0, per_category[np.maximum(codes, 0)], missing)


def positions(values: pd.Series, keys: pd.Series | Iterable) -> np.ndarray:
    """Where each value is among ``keys`` (the first if repeated), -1 where it is not."""
    coded = _codes(values)
    if coded is not None:
        return per_row(positions(coded[1], keys), coded[0], -1)
    text, ordered = arrow_text(values), arrow_text(keys)
    if _ascending(ordered):
        return _searched(_cast(text, ordered.type), ordered)
    found = pc.index_in(text, value_set=_cast(ordered, text.type))
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _cast(text: pa.Array | pa.ChunkedArray, to: pa.DataType) -> pa.Array | pa.ChunkedArray:
    return text if text.type == to else pc.cast(text, to)


def _ascending(text: pa.Array | pa.ChunkedArray, strictly: bool = False) -> bool:
    """Whether ``text`` is in order and complete: the staged keys are (state and result tables
    are written sorted), and then a lookup is a binary search, not a hash table of the keys."""
    if text.null_count:
        return False
    in_order = pc.less if strictly else pc.less_equal
    return len(text) < 2 or pc.all(in_order(text[:-1], text[1:])).as_py()


def distinct_in_order(values: pd.Series) -> bool:
    """Whether text ``values`` are ascending, without repeats or missing values (as staged keys are)."""
    return _ascending(arrow_text(values), strictly=True)


def _searched(text: pa.Array | pa.ChunkedArray, ordered: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``positions`` of ``text`` in the ascending ``ordered``, a slice at a time: the first place
    each value could go, kept where the key there is the value."""
    at = np.full(len(text), -1, dtype=np.int64)
    if not len(ordered):
        return at
    if isinstance(ordered, pa.ChunkedArray):  # arrow would join the chunks for every take below
        ordered = ordered.combine_chunks()
    for start in range(0, len(text), SLICE):
        values = text[start:start + SLICE]
        found = pc.fill_null(pc.search_sorted(ordered, values), len(ordered)).to_numpy(zero_copy_only=False)
        candidate = np.minimum(found, len(ordered) - 1).astype(np.int64)
        same = pc.fill_null(pc.equal(ordered.take(candidate), values), False).to_numpy(zero_copy_only=False)
        at[start:start + SLICE] = np.where(same, candidate, -1)
    return at


def take(targets: pd.Series, at: np.ndarray, index: pd.Index) -> pd.Series:
    """``targets`` at positions ``at`` (-1: missing), in ``targets``' dtype."""
    return pd.Series(pd.api.extensions.take(targets.array, at, allow_fill=True), index=index)


def lookup(values: pd.Series, keys: pd.Series, targets: pd.Series) -> pd.Series:
    """``values.map(dict(zip(keys, targets)))`` for text keys, without the dict."""
    return take(targets, positions(values, keys), values.index)


def isin(values: pd.Series, candidates: pd.Series | Iterable) -> pd.Series:
    """``values.isin(candidates)`` for text, without a Python object per candidate."""
    coded = _codes(values)
    if coded is not None:
        found = per_row(isin(coded[1], candidates).to_numpy(), coded[0], False)
    else:
        text, ordered = arrow_text(values), arrow_text(candidates)
        if _ascending(ordered):
            found = _searched(_cast(text, ordered.type), ordered) >= 0
        else:
            found = pc.is_in(text, value_set=_cast(ordered, text.type)).to_numpy(zero_copy_only=False)
    return pd.Series(np.asarray(found, dtype=bool), index=values.index)


# -- categoricals -----------------------------------------------------------------------------------


def as_str(values: pd.Series) -> pd.Series:
    """``values.astype(str)``, a categorical's categories only (a dictionary-encoded arrow column
    of text is text already)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.rename_categories(values.cat.categories.astype(str))
    if _dictionary_encoded(values):
        value_type = values.dtype.pyarrow_dtype.value_type
        if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
            return values
    return values.astype(str)


def as_categorical(values: pd.Series) -> pd.Series:
    """``values`` as a categorical: the distinct values once, a code per row."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values
    coded = _codes(values)
    if coded is not None:
        codes, uniques = pd.factorize(coded[1])
        return pd.Series(categorical(per_row(codes, coded[0], -1), uniques), index=values.index)
    codes, uniques = pd.factorize(values)
    return pd.Series(categorical(codes, uniques), index=values.index)


def subset(values: pd.Series, at: np.ndarray) -> pd.Categorical:
    """A categorical column's rows ``at``, as a categorical of the same categories."""
    return pd.Categorical.from_codes(values.cat.codes.to_numpy()[at], dtype=values.dtype, validate=False)


def categorical(codes: np.ndarray, categories: pd.Index) -> pd.Categorical:
    """``pd.Categorical.from_codes`` for categories that are distinct (``pd.factorize``'s) without
    pandas checking it again: the check keeps a Python object per category for as long as the
    column lives (a hundred MB for the users of a million-student district)."""
    dtype = pd.CategoricalDtype._from_fastpath(pd.Index(categories), ordered=False)
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


def categorical_from_arrow(codes: np.ndarray, categories: pa.Array) -> pd.Categorical:
    """A categorical of :func:`compact` codes and arrow categories (the codes are not copied),
    pandas checking that the categories are distinct: unlike :func:`categorical`, which takes a
    pandas index ``pd.factorize`` made distinct and skips the check. Text categories are Python
    strings: pandas makes them anyway for the check, and keeps them."""
    textual = pa.types.is_large_string(categories.type) or pa.types.is_string(categories.type)
    categories = pd.Index(categories.to_numpy(zero_copy_only=False), dtype=object if textual else None)
    return pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories), validate=False)


# -- integer codes ----------------------------------------------------------------------------------


def encoded(values: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """A text column as codes (-1: missing; read-only, and as small as a categorical's own:
    widen them before arithmetic) into its distinct values: a categorical's codes, else arrow's
    dictionary encoding (int32)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(), text_array(values.cat.categories, TEXT)
    dictionary = pc.dictionary_encode(arrow_text(values, TEXT))
    chunks = dictionary.chunks if isinstance(dictionary, pa.ChunkedArray) else [dictionary]
    if not chunks:
        return np.empty(0, dtype=np.int32), pa.array([], TEXT)
    codes = [(chunk.indices if chunk.indices.null_count == 0 else pc.fill_null(chunk.indices, -1)).to_numpy()
             for chunk in chunks]
    return codes[0] if len(codes) == 1 else np.concatenate(codes), chunks[0].dictionary  # one dictionary


def gather(values: np.ndarray, codes: np.ndarray, missing=-1) -> np.ndarray:
    """``values[codes]``, ``missing`` (of the values' type: False for flags) where the code is -1.
    A slice at a time: NumPy first copies an index array of small integers to 64 bits, and codes
    run to millions."""
    table = np.concatenate([values, np.asarray([missing], dtype=values.dtype)])
    found = np.empty(len(codes), dtype=table.dtype)
    for start in range(0, len(codes), AT_ONCE):
        np.take(table, codes[start: start + AT_ONCE], out=found[start: start + AT_ONCE])
    return found


def codes_used(codes: np.ndarray, count: int) -> np.ndarray:
    """Which of ``count`` values the codes (-1: none) name."""
    used = np.zeros(count + 1, dtype=bool)
    for start in range(0, len(codes), AT_ONCE):
        used[codes[start: start + AT_ONCE]] = True
    return used[:-1]


def distinct(values: list) -> tuple[np.ndarray, list]:
    """Where each of a few values is among their distinct values, and those values."""
    first: dict = {}
    where = np.asarray([first.setdefault(value, len(first)) for value in values], dtype=np.int64)
    return where, list(first)


def combined_key(*parts: np.ndarray) -> np.ndarray:
    """One int64 per distinct combination of the parts' codes (each -1 or more)."""
    key = np.zeros(len(parts[0]), dtype=np.int64)
    size = 1
    for codes in parts:
        count = int(codes.max(initial=-1)) + 2
        if size * count >= 1 << 62:
            key, uniques = pd.factorize(key)
            size = len(uniques)
        key *= count
        key += codes
        key += 1
        size *= count
    return key


def joint_codes(*keys: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Codes for keys (non-negative int64) from one or more arrays, into their distinct keys (sorted
    when counted densely)."""
    size = max(int(key.max(initial=-1)) for key in keys) + 1
    if size <= sum(len(key) for key in keys) + (1 << 20):
        seen = np.zeros(size, dtype=bool)
        for key in keys:
            seen[key] = True
        code = (np.cumsum(seen, dtype=np.int64) - 1).astype(code_type(int(seen.sum())))
        return [code[key] for key in keys], np.flatnonzero(seen)
    codes, uniques = pd.factorize(np.concatenate(keys))
    return np.split(codes, np.cumsum([len(key) for key in keys[:-1]])), uniques


def index_type(count: int) -> type:
    """An integer type for positions among ``count`` items."""
    return np.int32 if count < 1 << 31 else np.int64


def code_type(count: int) -> type:
    """The integer type pandas keeps a categorical's codes in, for ``count`` categories."""
    return np.int8 if count < 127 else np.int16 if count < 32_767 else np.int32


def compact(codes: np.ndarray, categories: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Codes (-1: missing) into only the categories used, in the integer type pandas keeps them in."""
    used = codes_used(codes, len(categories))
    if not used.all():
        codes = gather(np.where(used, np.cumsum(used) - 1, -1).astype(code_type(int(used.sum()))), codes)
        categories = categories.filter(pa.array(used))
    return codes.astype(code_type(len(categories)), copy=False), categories
