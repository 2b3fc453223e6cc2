"""What the LMS should hold, computed from IC's staged extracts and the district's maps.

Pure pandas over the normalised extract tables (``include/oneroster/models.py``): no
network, no Airflow. Each ``desired_*`` function returns a :class:`Desired` — one row
per LMS object that should exist, in the neutral fields of ``include/lms/target.py`` —
plus the IC records it left out and why. :mod:`include.provisioning.diff` then compares
that with what was provisioned before, so only changes are sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.config import DO_NOT_SYNC, ExistingBuilding, ExistingGradingPeriod, Provisioning
from include.lms.target import ITEM_TYPES, ObjectKind

PENDING = "pending:"  # LMS id of an object this run would create (a dry run never learns the real one)

ROLE_FAMILIES = {
    "student": "student",
    "teacher": "teacher",
    "aide": "teacher",
    "proctor": "teacher",
    "counselor": "teacher",
    "siteAdministrator": "administrator",
    "districtAdministrator": "administrator",
    "systemAdministrator": "administrator",
    "principal": "administrator",
    "administrator": "administrator",
    "guardian": "guardian",
    "parent": "guardian",
    "relative": "guardian",
}

UNMAPPED_SCHOOL = "unmapped school"
UNMAPPED_TERM = "unmapped term"
NO_TERM_IN_IC = "no term in IC"
USERNAME_WITH_SPACES = "username with spaces"
DO_NOT_SYNC_ROLE = "do-not-sync role"
TRIAL_SCHEDULE = "trial schedule"
INACTIVE_IN_IC = "inactive in IC"
UNKNOWN_ROLE = "role not in the role map"
COURSE_NOT_PROVISIONED = "course not provisioned"
SECTION_NOT_PROVISIONED = "section not provisioned"
USER_NOT_PROVISIONED = "user not provisioned"
BUILDING_NOT_CREATED = "building not created yet"

SLICE = 250_000  # rows of text handled at once where a whole column would otherwise be copied


@dataclass(frozen=True)
class Desired:
    """The LMS objects of one kind that should exist, and the IC records left out (key, school, reason)."""

    kind: ObjectKind
    rows: pd.DataFrame
    skipped: pd.DataFrame


def item_fields(kind: ObjectKind) -> list[str]:
    return list(ITEM_TYPES[kind].model_fields)


def _desired(kind: ObjectKind, rows: pd.DataFrame, skipped: list[pd.DataFrame]) -> Desired:
    columns = ["school", *item_fields(kind)]
    rows = sorted_by_key(rows[columns], distinct=True).reset_index(drop=True)
    left_out = [frame for frame in skipped if not frame.empty]
    skipped_rows = (
        pd.concat(left_out, ignore_index=True)[["key", "school", "reason"]]
        if left_out
        else pd.DataFrame({"key": pd.Series(dtype=str), "school": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    )
    return Desired(kind, rows, skipped_rows.drop_duplicates("key").reset_index(drop=True))


def sorted_by_key(rows: pd.DataFrame, distinct: bool = False) -> pd.DataFrame:
    """``rows.sort_values("key", kind="stable")`` (and ``.drop_duplicates("key")`` first if
    ``distinct``) by one stable arrow sort, and no copy of the rows when they are in order."""
    if len(rows) < 2:
        return rows
    keys = _text(rows["key"])
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
    text = pa.chunked_array([chunk for key in keys for chunk in _chunks(_text(key, pa.large_string()))],
                            pa.large_string())
    kept_at = np.flatnonzero(kept)
    if not len(kept_at) or _ascending(text[kept_at[0]:kept_at[-1] + 1]):  # one part in order (a quiet night)
        return kept_at
    order = pc.sort_indices(text).to_numpy(zero_copy_only=False).view(np.int64)
    return order if len(kept_at) == len(kept) else order[kept[order]]


def _chunks(text: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return text.chunks if isinstance(text, pa.ChunkedArray) else [text]


def _skip(frame: pd.DataFrame, key: str, school: str, reason: str) -> pd.DataFrame:
    return pd.DataFrame({"key": frame[key].astype(str), "school": frame[school], "reason": reason})


# -- vectorised lookups ---------------------------------------------------------------------------
# A district has millions of users and enrollments: ids are matched by arrow's hash kernels on
# the text columns as read from Parquet, never through a Python dict or a Python call per row.


def _text(values: pd.Series | Iterable, like: pa.DataType | None = None) -> pa.ChunkedArray | pa.Array:
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
    text = _text(pd.Series(values) if isinstance(values, pd.Index) else values, like)
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


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
    return codes, _pandas(pa.chunked_array([chunk.dictionary for chunk in chunks], value_type))


def _dictionary_encoded(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.ArrowDtype) and pa.types.is_dictionary(values.dtype.pyarrow_dtype)


def _per_row(per_category: np.ndarray, codes: np.ndarray, missing) -> np.ndarray:
    """A category's answer for each row; ``missing`` where the row has no value."""
    if not len(per_category):
        return np.full(len(codes), missing)
    return np.where(codes >= 0, per_category[np.maximum(codes, 0)], missing)


def positions(values: pd.Series, keys: pd.Series | Iterable) -> np.ndarray:
    """Where each value is among ``keys`` (the first if repeated), -1 where it is not."""
    coded = _codes(values)
    if coded is not None:
        return _per_row(positions(coded[1], keys), coded[0], -1)
    text, ordered = _text(values), _text(keys)
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
    return _ascending(_text(values), strictly=True)


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
        found = _per_row(isin(coded[1], candidates).to_numpy(), coded[0], False)
    else:
        text, ordered = _text(values), _text(candidates)
        if _ascending(ordered):
            found = _searched(_cast(text, ordered.type), ordered) >= 0
        else:
            found = pc.is_in(text, value_set=_cast(ordered, text.type)).to_numpy(zero_copy_only=False)
    return pd.Series(np.asarray(found, dtype=bool), index=values.index)


def flatten(values: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """The items of a list column and the position of the row each came from (empty lists
    and missing values give none); arrow-backed lists are not copied into Python objects."""
    lists = pa.array(values, from_pandas=True)
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks() if lists.num_chunks else pa.array([], lists.type)
    items = pc.list_flatten(lists)
    parents = np.asarray(pc.list_parent_indices(lists).to_numpy(zero_copy_only=False), dtype=np.int64)
    return parents, items


def _field(items: pa.Array, name: str) -> pa.Array:
    return items.field(name) if pa.types.is_struct(items.type) else pa.nulls(len(items), pa.large_string())


def _pandas(array: pa.Array | pa.ChunkedArray) -> pd.Series:
    return pa.chunked_array([array]).to_pandas() if isinstance(array, pa.Array) else array.to_pandas()


def _grouped_lists(parents: np.ndarray, items: pd.Series, count: int) -> pd.arrays.ArrowExtensionArray:
    """One list per row (``count`` rows) of the sorted distinct items whose parent it is, assembled
    by arrow from offsets and kept in arrow: a million users' lists are not a million Python lists."""
    frame = pd.DataFrame({"parent": parents, "item": items.to_numpy(dtype=object)}).dropna()
    frame = frame.drop_duplicates().sort_values(["parent", "item"], kind="stable")
    sizes = np.bincount(frame["parent"].to_numpy(dtype=np.int64), minlength=count)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]), pa.int64())
    values = pa.array(frame["item"].to_numpy(dtype=object), pa.large_string())
    return pd.arrays.ArrowExtensionArray(pa.LargeListArray.from_arrays(offsets, values))


# -- schools and terms ----------------------------------------------------------------------------


def school_key(school_id: str) -> str:
    return f"school-{school_id}"


def desired_buildings(orgs: pd.DataFrame, provisioning: Provisioning) -> Desired:
    """Schools mapped to ``create`` become buildings; those mapped to an existing building need none."""
    schools = orgs[orgs["type"] == "school"].copy()
    schools["key"] = schools["sourced_id"].map(school_key)
    schools["school"] = schools["sourced_id"]
    mapping = schools["sourced_id"].map(lambda school: provisioning.schools.get(school, "skip"))
    inactive = schools["status"] != "active"
    create = (mapping == "create") & ~inactive
    unmapped = mapping.map(lambda target: target == "skip") & ~inactive
    schools["title"] = schools["name"]
    schools["building_code"] = schools["identifier"].fillna(schools["sourced_id"])
    return _desired(
        "building",
        schools[create],
        [_skip(schools[unmapped], "key", "school", UNMAPPED_SCHOOL), _skip(schools[inactive], "key", "school", INACTIVE_IN_IC)],
    )


def school_buildings(provisioning: Provisioning, created: Mapping[str, str]) -> dict[str, str]:
    """IC school sourcedId -> LMS building id, for the schools that are provisioned.

    ``created`` maps building keys to the LMS ids of buildings this integration created
    (from the state, or ``PENDING`` ids in a dry run); a school mapped to ``create``
    whose building does not exist yet is left out.
    """
    buildings: dict[str, str] = {}
    for school, target in provisioning.schools.items():
        if isinstance(target, ExistingBuilding):
            buildings[school] = target.building_id
        elif target == "create" and created.get(school_key(school)):
            buildings[school] = created[school_key(school)]
    return buildings


def term_key(session_id: str) -> str:
    return f"term-{session_id}"


def year_key(school_year: int) -> str:
    return f"year-{school_year}"


def _term_targets(sessions: pd.DataFrame, provisioning: Provisioning) -> pd.Series:
    terms = provisioning.terms
    return sessions["sourced_id"].map(lambda session: terms.map.get(session, terms.unlisted))


def desired_grading_periods(sessions: pd.DataFrame, classes: pd.DataFrame, provisioning: Provisioning) -> Desired:
    """The terms classes are scheduled in, as LMS grading periods (or one per year when consolidated)."""
    _, used = flatten(classes.loc[classes["status"] == "active", "term_sourced_ids"])
    used = pc.unique(used)
    terms = sessions[isin(sessions["sourced_id"], _pandas(used)) & (sessions["status"] == "active")].copy()
    terms["school"] = None
    if provisioning.terms.consolidate_year:
        years = sessions[sessions["status"] == "active"].groupby("school_year", as_index=False).agg(
            start=("start_date", "min"), end=("end_date", "max")
        )
        titles = sessions[sessions["type"] == "schoolYear"].set_index("school_year")["title"]
        years["key"] = years["school_year"].map(year_key)
        years["title"] = years["school_year"].map(lambda year: titles.get(year, f"School year {year}"))
        years["school"] = None
        return _desired("grading_period", years[years["school_year"].isin(terms["school_year"])], [])
    targets = _term_targets(terms, provisioning)
    terms["key"] = terms["sourced_id"].map(term_key)
    terms["start"] = terms["start_date"]
    terms["end"] = terms["end_date"]
    skipped = terms[targets.map(lambda target: target == "skip")]
    return _desired(
        "grading_period",
        terms[targets.map(lambda target: target == "create")],
        [_skip(skipped, "key", "school", UNMAPPED_TERM)],
    )


def term_grading_periods(
    sessions: pd.DataFrame, provisioning: Provisioning, created: Mapping[str, str]
) -> dict[str, str]:
    """IC academicSession sourcedId -> LMS grading period id, for mapped or created terms."""
    periods: dict[str, str] = {}
    for session, year, target in zip(
        sessions["sourced_id"], sessions["school_year"], _term_targets(sessions, provisioning), strict=True
    ):
        if provisioning.terms.consolidate_year:
            lms_id = created.get(year_key(year))
        elif isinstance(target, ExistingGradingPeriod):
            lms_id = target.grading_period_id
        else:
            lms_id = created.get(term_key(session)) if target == "create" else None
        if lms_id:
            periods[session] = lms_id
    return periods


# -- users ------------------------------------------------------------------------------------


def user_key(users: pd.DataFrame) -> pd.Series:
    """The LMS's external id for a person: IC's 1.1 id, the same whichever version served it."""
    return users["legacy_sourced_id"].fillna(users["sourced_id"]).astype(str)


def _user_roles(users: pd.DataFrame, codes: np.ndarray) -> pd.DataFrame:
    """One row per (user, org) the user has a role in, primary first; ``user`` is the user's row,
    ``code`` its ``codes`` (the user's number, the same for rows of one sourcedId)."""
    parents, roles = flatten(users["roles"])
    frame = pd.DataFrame(
        {
            "user": parents,
            "code": codes[parents],
            "org": _pandas(_field(roles, "org_sourced_id")).array,
            "primary": (_pandas(_field(roles, "role_type")) == "primary").to_numpy(dtype=bool),
        }
    )
    return frame.iloc[np.lexsort((~frame["primary"].to_numpy(), frame["code"].to_numpy()))]


def _role_ids(frame: pd.DataFrame, provisioning: Provisioning) -> pd.Series:
    """The LMS role id of each user's (role family, school), worked out once per distinct pair."""
    pairs = frame[["family", "school"]]
    codes = pairs.groupby(["family", "school"], dropna=False, sort=False).ngroup().to_numpy()
    first = pairs[~pairs.duplicated()]
    ids = [
        getattr(provisioning.roles.for_school(provisioning.roles_by_school.get(school)), family)
        if isinstance(family, str) else None
        for family, school in zip(first["family"], first["school"], strict=True)
    ]
    return pd.Series(pd.array(ids, dtype=object)[codes] if len(ids) else [], index=frame.index, dtype=object)


def desired_users(users: pd.DataFrame, provisioning: Provisioning, buildings: Mapping[str, str]) -> Desired:
    """Users with a mapped school and a synced role; guardians included (their links are separate)."""
    building_ids = pd.Series(list(buildings.values()), index=list(buildings), dtype=object)
    frame = pd.DataFrame(
        {
            "key": user_key(users),
            "sourced_id": users["sourced_id"],
            "status": users["status"],
            "enabled_user": users["enabled_user"],
            "given_name": users["given_name"],
            "family_name": users["family_name"],
            "preferred_first_name": users["preferred_first_name"],
            "email": users["email"],
            "username": users["username"],
        }
    ).reset_index(drop=True)
    codes = pd.factorize(frame["sourced_id"])[0]
    roles = _user_roles(users, codes)
    first = ~roles.duplicated("code")
    by_code = pd.Series(roles.loc[first, "org"].array, index=roles.loc[first, "code"].to_numpy())
    frame["school"] = by_code.reindex(codes).array
    frame["family"] = lookup(users["primary_role"], pd.Series(list(ROLE_FAMILIES)),
                             pd.Series(list(ROLE_FAMILIES.values()), dtype=object)).to_numpy()
    frame["building_id"] = lookup(frame["school"], building_ids.index.to_series(), building_ids)
    frame["role_id"] = _role_ids(frame, provisioning)

    inactive = (frame["status"] != "active") | ~frame["enabled_user"].astype(bool)
    unmapped = ~inactive & frame["building_id"].isna()
    unknown_role = ~inactive & ~unmapped & frame["role_id"].isna()
    do_not_sync = ~inactive & ~unmapped & ~unknown_role & (frame["role_id"] == DO_NOT_SYNC)
    spaces = ~inactive & ~unmapped & ~unknown_role & ~do_not_sync & frame["username"].fillna("").str.contains(" ")
    keep = ~(inactive | unmapped | unknown_role | do_not_sync | spaces)

    kept = frame[keep].copy()
    additional = roles[~first]  # every org after the primary one
    building = lookup(additional["org"], building_ids.index.to_series(), building_ids)
    row_of_code = pd.Series(np.arange(len(kept)), index=codes[keep.to_numpy()])
    row_of_code = row_of_code[~row_of_code.index.duplicated()]
    row = row_of_code.reindex(additional["code"].to_numpy()).to_numpy()
    primary = kept["building_id"].array
    listed = ~np.isnan(row) & building.notna().to_numpy()
    row = row[listed].astype(np.int64)
    building = building[listed].to_numpy(dtype=object)
    other = building != np.asarray(primary.take(row), dtype=object)
    kept["additional_building_ids"] = _grouped_lists(row[other], pd.Series(building[other]), len(kept))
    return _desired(
        "user",
        kept,
        [
            _skip(frame[inactive], "key", "school", INACTIVE_IN_IC),
            _skip(frame[unmapped], "key", "school", UNMAPPED_SCHOOL),
            _skip(frame[unknown_role], "key", "school", UNKNOWN_ROLE),
            _skip(frame[do_not_sync], "key", "school", DO_NOT_SYNC_ROLE),
            _skip(frame[spaces], "key", "school", USERNAME_WITH_SPACES),
        ],
    )


def desired_guardian_links(users: pd.DataFrame, provisioned_users: pd.DataFrame) -> Desired:
    """Parent–child links between guardians and students that are both provisioned; a link
    whose guardian or student is not is listed as skipped, so every link is accounted for."""
    keys = user_key(users)
    guardians = users[lookup(users["primary_role"], pd.Series(list(ROLE_FAMILIES)),
                             pd.Series(list(ROLE_FAMILIES.values()), dtype=object)) == "guardian"]
    parents, students = flatten(guardians["agent_sourced_ids"])
    frame = pd.DataFrame(
        {
            "guardian_key": keys.loc[guardians.index].to_numpy()[parents],
            "student_key": lookup(_pandas(students), users["sourced_id"], keys).to_numpy(),
        }
    ).dropna()
    provisioned = provisioned_users["key"]
    frame["key"] = frame["guardian_key"] + ":" + frame["student_key"]
    both = isin(frame["guardian_key"], provisioned) & isin(frame["student_key"], provisioned)
    unlinked = frame[~both].assign(school=None)
    frame = frame[both].copy()
    frame["school"] = lookup(frame["student_key"], provisioned, provisioned_users["school"])
    return _desired("guardian_link", frame, [_skip(unlinked, "key", "school", USER_NOT_PROVISIONED)])


# -- courses, sections, enrollments ----------------------------------------------------------------


def desired_courses(courses: pd.DataFrame, buildings: Mapping[str, str]) -> Desired:
    frame = courses.copy()
    frame["key"] = frame["sourced_id"].astype(str)
    frame["school"] = frame["org_sourced_id"]
    frame["building_id"] = frame["school"].map(buildings)
    inactive = frame["status"] != "active"
    trial = ~inactive & frame["trial_schedule"].astype(bool)
    unmapped = ~inactive & ~trial & frame["building_id"].isna()
    keep = ~(inactive | trial | unmapped)
    return _desired(
        "course",
        frame[keep],
        [
            _skip(frame[inactive], "key", "school", INACTIVE_IN_IC),
            _skip(frame[trial], "key", "school", TRIAL_SCHEDULE),
            _skip(frame[unmapped], "key", "school", UNMAPPED_SCHOOL),
        ],
    )


def desired_sections(
    classes: pd.DataFrame,
    buildings: Mapping[str, str],
    course_ids: Mapping[str, str],
    grading_periods: Mapping[str, str],
) -> Desired:
    """Classes of provisioned courses with at least one mapped term; cross-listed classes stay
    separate sections (their group is kept in the plan for the report)."""
    frame = classes.copy()
    frame["key"] = frame["sourced_id"].astype(str)
    frame["school"] = frame["school_sourced_id"]
    frame["course_key"] = frame["course_sourced_id"].astype(str)
    frame["course_id"] = lookup(frame["course_key"], pd.Series(list(course_ids), dtype=object),
                                pd.Series(list(course_ids.values()), dtype=object))
    parents, terms = flatten(frame["term_sourced_ids"])
    periods = lookup(_pandas(terms), pd.Series(list(grading_periods), dtype=object),
                     pd.Series(list(grading_periods.values()), dtype=object))
    frame["grading_period_ids"] = _grouped_lists(parents, periods, len(frame))
    inactive = frame["status"] != "active"
    trial = ~inactive & frame["trial_schedule"].astype(bool)
    unmapped = ~inactive & ~trial & ~frame["school"].isin(list(buildings))
    no_course = ~inactive & ~trial & ~unmapped & frame["course_id"].isna()
    no_periods = np.bincount(parents[periods.notna().to_numpy()], minlength=len(frame)) == 0
    termless = np.bincount(parents, minlength=len(frame)) == 0
    no_term_in_ic = ~inactive & ~trial & ~unmapped & ~no_course & termless
    no_term = ~inactive & ~trial & ~unmapped & ~no_course & no_periods & ~termless
    keep = ~(inactive | trial | unmapped | no_course | no_term | no_term_in_ic)
    frame["section_code"] = frame["class_code"].fillna(frame["key"])
    return _desired(
        "section",
        frame[keep],
        [
            _skip(frame[inactive], "key", "school", INACTIVE_IN_IC),
            _skip(frame[trial], "key", "school", TRIAL_SCHEDULE),
            _skip(frame[unmapped], "key", "school", UNMAPPED_SCHOOL),
            _skip(frame[no_course], "key", "school", COURSE_NOT_PROVISIONED),
            _skip(frame[no_term], "key", "school", UNMAPPED_TERM),
            _skip(frame[no_term_in_ic], "key", "school", NO_TERM_IN_IC),
        ],
    )


def desired_enrollments(
    enrollments: pd.DataFrame, users: pd.DataFrame, provisioned_users: pd.DataFrame, sections: pd.DataFrame
) -> Desired:
    """Teachers (and administrators) as section admins, students as members, of provisioned sections.

    ``sections`` holds the provisioned sections with their LMS ids (key, course_key, lms_id).
    Millions of rows: sections and users are matched as integer codes, and the kept rows are
    built once, in key order, from the codes: categoricals (one copy of each id) around the
    joined key, made by arrow.
    """
    section_codes, section_keys = pd.factorize(sections["key"])
    section_at = positions(_as_str(enrollments["class_sourced_id"]), sections["key"])
    user_codes, user_keys = pd.factorize(user_key(users))
    user_code = _per_row(user_codes, positions(enrollments["user_sourced_id"], users["sourced_id"]), -1)
    provisioned = isin(pd.Series(user_keys), provisioned_users["key"]).to_numpy()

    inactive = ~isin(enrollments["status"], ["active"]).to_numpy()
    no_section = ~inactive & (section_at < 0)
    no_user = ~inactive & ~no_section & ~_per_row(provisioned, user_code, False)
    keep = np.flatnonzero(~(inactive | no_section | no_user))
    section_texts, user_texts = (text_array(keys, pa.large_string()) for keys in (section_keys, user_keys))
    order = _in_key_order(section_codes[section_at[keep]], section_texts, user_code[keep], user_texts)
    keep = keep[order]
    del user_codes, order
    kept_at, user_code = section_at[keep], user_code[keep]
    del section_at
    section_code = section_codes[kept_at]
    course_codes, course_keys = pd.factorize(sections["course_key"])
    lms_codes, lms_ids = pd.factorize(sections["lms_id"])
    school = _categories(enrollments["school_sourced_id"])
    kept = pd.DataFrame(
        {
            "school": _subset(school, keep),
            "key": _pandas(_joined_key(section_texts, section_code, user_texts, user_code)).array,
            "course_key": _categorical(course_codes[kept_at], course_keys),
            "section_key": _categorical(section_code, section_keys),
            "section_id": _categorical(lms_codes[kept_at], lms_ids),
            "user_key": _categorical(user_code, user_keys),
            "admin": isin(enrollments["role"], ["teacher", "administrator"]).to_numpy()[keep],
        },
        copy=False,
    )
    left_out = pd.DataFrame({"sourced_id": enrollments["sourced_id"], "school": school}, copy=False)
    return _desired(
        "enrollment",
        kept,
        [
            _skip(left_out[inactive], "sourced_id", "school", INACTIVE_IN_IC),
            _skip(left_out[no_section], "sourced_id", "school", SECTION_NOT_PROVISIONED),
            _skip(left_out[no_user], "sourced_id", "school", USER_NOT_PROVISIONED),
        ],
    )


def _in_key_order(section: np.ndarray, sections: pa.Array, user: np.ndarray, users: pa.Array) -> np.ndarray:
    """The rows (codes into ``sections`` and ``users``) in the stable order of their
    ``<section>:<user>`` keys, each pair once, from the ranks of the distinct sections (with the
    ``:``) and users rather than by sorting millions of joined strings; the ranks decide unless
    a section id holds a ``:`` (then the joined keys are sorted, and :func:`_desired` drops
    repeated keys)."""
    if pc.any(pc.match_substring(sections, ":")).as_py():
        return pc.sort_indices(_joined_key(sections, section, users, user)).to_numpy(zero_copy_only=False)
    empty, separator = pa.scalar("", pa.large_string()), pa.scalar(":", pa.large_string())
    section_rank = _ranks(pc.binary_join_element_wise(sections, empty, separator))
    rank = section_rank[section] * len(users) + _ranks(users)[user]
    order = np.argsort(rank, kind="stable")
    ranked = rank[order]
    return order[np.r_[True, ranked[1:] != ranked[:-1]]] if len(order) else order


def _ranks(texts: pa.Array) -> np.ndarray:
    ranks = np.empty(len(texts), dtype=np.int64)
    ranks[pc.sort_indices(texts).to_numpy(zero_copy_only=False)] = np.arange(len(texts))
    return ranks


def _joined_key(sections: pa.Array, section: np.ndarray, users: pa.Array, user: np.ndarray) -> pa.Array:
    """``<section key>:<user key>`` of each row, joined by arrow a slice of rows at a time into one
    array laid out beforehand: only the joined text is ever whole (not each side's, nor slices
    and their copy), and in one piece (arrow takes rows from a chunked column by first joining
    its chunks, a copy of the whole column per take)."""
    offsets = np.zeros(len(section) + 1, dtype=np.int64)
    np.cumsum(_lengths(sections)[section] + 1 + _lengths(users)[user], out=offsets[1:])
    data = np.empty(offsets[-1], dtype=np.uint8)
    separator = pa.scalar(":", pa.large_string())
    for start in range(0, len(section), SLICE):
        stop = min(start + SLICE, len(section))
        joined = pc.binary_join_element_wise(sections.take(section[start:stop]), users.take(user[start:stop]),
                                             separator)
        size = offsets[stop] - offsets[start]
        data[offsets[start]:offsets[stop]] = np.frombuffer(joined.buffers()[2], dtype=np.uint8, count=size)
    return pa.LargeStringArray.from_buffers(len(section), pa.py_buffer(offsets), pa.py_buffer(data))


def _lengths(texts: pa.Array) -> np.ndarray:
    return np.asarray(pc.binary_length(texts).to_numpy(zero_copy_only=False), dtype=np.int64)


def _subset(values: pd.Series, at: np.ndarray) -> pd.Categorical:
    """A categorical column's rows ``at``, as a categorical of the same categories."""
    return pd.Categorical.from_codes(values.cat.codes.to_numpy()[at], dtype=values.dtype, validate=False)


def _categorical(codes: np.ndarray, categories: pd.Index) -> pd.Categorical:
    """``pd.Categorical.from_codes`` for categories that are distinct (``pd.factorize``'s) without
    pandas checking it again: the check keeps a Python object per category for as long as the
    column lives (a hundred MB for the users of a million-student district)."""
    dtype = pd.CategoricalDtype._from_fastpath(pd.Index(categories), ordered=False)
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


def _as_str(values: pd.Series) -> pd.Series:
    """``values.astype(str)``, a categorical's categories only (a dictionary-encoded arrow column
    of text is text already)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.rename_categories(values.cat.categories.astype(str))
    if _dictionary_encoded(values):
        value_type = values.dtype.pyarrow_dtype.value_type
        if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
            return values
    return values.astype(str)


def _categories(values: pd.Series) -> pd.Series:
    """``values`` as a categorical: the distinct values once, a code per row."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values
    coded = _codes(values)
    if coded is not None:
        codes, uniques = pd.factorize(coded[1])
        return pd.Series(_categorical(_per_row(codes, coded[0], -1), uniques), index=values.index)
    codes, uniques = pd.factorize(values)
    return pd.Series(_categorical(codes, uniques), index=values.index)


def unknown_references(provisioning: Provisioning, kind: ObjectKind, catalog: Mapping[str, str]) -> list[str]:
    """The district file's references to LMS objects that the LMS does not have, as
    ``field.path: problem`` so the error names the field and the value."""
    problems = []
    if kind == "building":
        for school, target in provisioning.schools.items():
            if isinstance(target, ExistingBuilding) and target.building_id not in catalog:
                problems.append(f"provisioning.schools.{school}.building_id: the LMS has no building {target.building_id!r}")
    elif kind == "grading_period":
        for session, target in provisioning.terms.map.items():
            if isinstance(target, ExistingGradingPeriod) and target.grading_period_id not in catalog:
                problems.append(
                    f"provisioning.terms.map.{session}.grading_period_id: "
                    f"the LMS has no grading period {target.grading_period_id!r}"
                )
    elif kind == "user":
        maps = [("provisioning.roles", provisioning.roles.model_dump())] + [
            (f"provisioning.roles_by_school.{school}", overrides.model_dump(exclude_none=True))
            for school, overrides in provisioning.roles_by_school.items()
        ]
        for where, roles in maps:
            for family, role_id in roles.items():
                if role_id != DO_NOT_SYNC and role_id not in catalog:
                    problems.append(f"{where}.{family}: the LMS has no role {role_id!r}")
    return problems
