"""Webinar attendee CSV files read record by record: Zoom's attendee report or any CSV.

The file is never read whole: the encoding and delimiter are guessed from the first
64 KB, then the csv module pulls one record at a time through a text wrapper. Each
record becomes a `Row` (the fields of a person, and whether they attended) or a
`Rejected` with its line number and the reason; the caller stores rows as they come.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any
from zoneinfo import ZoneInfo

from services.intake.normalize.fields import InvalidField
from services.intake.sources.forms import FORM_TARGETS, UTM_TARGETS

SAMPLE_BYTES = 64 * 1024
# Where a header must show up by; past this the file is not an attendee list.
HEADER_SEARCH_RECORDS = 50
DELIMITERS = (",", ";", "\t")

# Columns a CSV may be mapped onto: the form targets, plus what attendance lists carry.
CSV_TARGETS = (
    *(t for t in FORM_TARGETS if t not in ("consent", "rendered_at")),
    "joined_at",
    "registered_at",
    "attended",
    "minutes",
    "skip",
)

# Header names we recognise without a mapping: Zoom's report columns, common English
# and Russian names, and our own field names.
_SYNONYMS: dict[str, str] = {
    **{t: t for t in CSV_TARGETS if t != "skip"},
    "e-mail": "email", "user email": "email", "email address": "email",
    "электронная почта": "email", "адрес электронной почты": "email", "почта": "email",
    "phone number": "phone", "telephone": "phone", "телефон": "phone",
    "номер телефона": "phone",
    "full name": "name", "user name (original name)": "name", "name (original name)": "name",
    "user name": "name", "фио": "name",
    "first name": "first_name", "имя": "first_name",
    "last name": "last_name", "фамилия": "last_name",
    "organization": "company", "org": "company", "компания": "company",
    "организация": "company",
    "job title": "job_title", "должность": "job_title",
    "отрасль": "industry",
    "company size": "company_size", "no of employees": "company_size",
    "number of employees": "company_size", "размер компании": "company_size",
    "country/region": "country", "country/region name": "country", "страна": "country",
    "state/province": "region", "регион": "region",
    "comments": "message", "questions & comments": "message", "комментарий": "message",
    "purchasing time frame": "timeframe", "role in purchase process": "role_in_purchase",
    "join time": "joined_at", "время входа": "joined_at",
    "registration time": "registered_at", "время регистрации": "registered_at",
    "присутствовал": "attended",
    "time in session (minutes)": "minutes", "duration (minutes)": "minutes",
    # Zoom report columns that say nothing about the person.
    "leave time": "skip", "is guest": "skip", "approval status": "skip",
    "source name": "skip",
}  # fmt: skip
_SECTION = re.compile(r"^(attendee|host|panelist|panellist)s? details$|^other attended$", re.I)
_YES = {"yes", "y", "true", "1", "да", "attended"}
_NO = {"no", "n", "false", "0", "нет", "", "--"}
# Row values copied to the person as they are (name and attendance are built).
_COPIED = (
    "email",
    "phone",
    "company",
    "job_title",
    "industry",
    "company_size",
    "country",
    "region",
    "message",
    "timeframe",
    "role_in_purchase",
    "page_url",
    "referrer",
    "budget",
)
_TIME_FORMATS = (
    "%b %d, %Y %I:%M %p",
    "%b %d, %Y %I:%M:%S %p",
    "%b %d, %Y %H:%M:%S",
    "%b %d, %Y %H:%M",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
)


@dataclass(frozen=True)
class Row:
    row: int
    person: dict[str, Any]  # the fields of a `WebinarPersonIn`
    attended: bool


@dataclass(frozen=True)
class Rejected:
    row: int
    error: str


def sniff_encoding(sample: bytes) -> str:
    """UTF-8 (with or without BOM) when the bytes read as UTF-8; else Windows-1251.

    A UTF-8 file with a stray bad byte stays UTF-8 (the row holding it is rejected):
    it is UTF-8 when its valid multi-byte characters outnumber its invalid sequences.
    Windows-1251 Cyrillic almost never forms valid UTF-8, so it has none of the former.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    # A multi-byte character cut by the sample's end is no error: final=False keeps it.
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(sample, final=False)
    invalid = text.count("\ufffd")
    valid = sum(1 for ch in text if ord(ch) > 0x7F) - invalid
    return "utf-8" if invalid == 0 or valid > invalid else "cp1251"


def sniff_delimiter(text: str) -> str:
    """The candidate that occurs most often in the first lines (`;` from Russian Excel)."""
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    counts = {d: sum(line.count(d) for line in lines) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def open_text(binary: IO[bytes]) -> tuple[io.TextIOWrapper, str, str]:
    """Wrap the upload (at its start) as text; return it with the encoding and delimiter."""
    sample = binary.read(SAMPLE_BYTES)
    binary.seek(0)
    encoding = sniff_encoding(sample)
    head = sample.decode(encoding, errors="replace")
    # Undecodable bytes become U+FFFD and the record holding them is rejected, so one bad
    # byte costs one row, not the file.
    text = io.TextIOWrapper(binary, encoding=encoding, errors="replace", newline="")
    return text, encoding, sniff_delimiter(head)


@dataclass
class ColumnPlan:
    """Which column holds what: a target per header position, or a free-form field name."""

    header: list[str]
    targets: list[str | None]
    width: int = field(init=False)

    def __post_init__(self) -> None:
        # Zoom ends lines with a comma: trailing empty header cells are no columns.
        self.width = max((i + 1 for i, h in enumerate(self.header) if h.strip()), default=0)


def plan_columns(header: list[str], mapping: Mapping[str, str] | None) -> ColumnPlan | None:
    """The plan for a header row, or None when the row is not a header (no e-mail or phone)."""
    mapping = mapping or {}
    targets: list[str | None] = []
    for cell in header:
        name = cell.strip()
        targets.append(mapping.get(name) or _SYNONYMS.get(name.lower()))
    if not {"email", "phone"} & set(targets):
        return None
    return ColumnPlan(header=[h.strip() for h in header], targets=targets)


def check_mapping(mapping: Mapping[str, str]) -> None:
    unknown = sorted({t for t in mapping.values() if t not in CSV_TARGETS})
    if unknown:
        raise InvalidField(
            "mapping", f"unknown lead fields {unknown}; known: {', '.join(CSV_TARGETS)}"
        )


def _records(text: IO[str], delimiter: str) -> Iterator[tuple[int, list[str] | str]]:
    """(first line of the record, its cells) or (line, error) for a record csv cannot read."""
    reader = csv.reader(text, delimiter=delimiter, quotechar='"', strict=True)
    line = 0
    while True:
        start = line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            if "unexpected end of data" in str(exc):
                yield start, "an opening quote is never closed; the rest of the file is one field"
            else:
                yield start, f"badly quoted: {exc}"
            continue
        line = reader.line_num
        yield start, cells


def read_rows(
    text: IO[str],
    delimiter: str,
    *,
    mapping: Mapping[str, str] | None,
    timezone: str,
    encoding: str,
) -> Iterator[Row | Rejected]:
    """Every record after the attendee header, as a Row or a Rejected.

    Zoom's report opens with summary, host and panelist sections before "Attendee
    Details"; those are passed over. Raises InvalidField("file") when no header with an
    e-mail or phone column shows up within the first records.
    """
    zone = ZoneInfo(timezone)
    plan: ColumnPlan | None = None
    header_found = False
    section: str | None = None
    searched = 0
    for line, cells in _records(text, delimiter):
        if plan is None:
            if header_found:
                continue  # past the attendee section: Zoom may append others
            searched += 1
            if searched > HEADER_SEARCH_RECORDS:
                break
            if isinstance(cells, str):
                continue
            marker = _section_marker(cells)
            if marker is not None:
                section = marker
            elif section not in ("host", "panelist", "panellist"):
                plan = plan_columns(cells, mapping)
                if plan is not None:
                    header_found = True
                    if mapping:
                        _require_mapped_columns(plan, mapping)
            continue
        if isinstance(cells, str):
            yield Rejected(line, cells)
        elif _section_marker(cells) is not None:
            plan = None
        elif any(c.strip() for c in cells):
            yield _row(line, cells, plan, zone, encoding)
    if not header_found:
        raise InvalidField(
            "file",
            f"no header row with an e-mail or phone column in the first "
            f"{HEADER_SEARCH_RECORDS} records; is this an attendee list?",
        )


def _section_marker(cells: list[str]) -> str | None:
    filled = [c.strip() for c in cells if c.strip()]
    if len(filled) == 1 and _SECTION.match(filled[0]):
        return filled[0].split()[0].lower()
    return None


def _require_mapped_columns(plan: ColumnPlan, mapping: Mapping[str, str]) -> None:
    missing = [name for name in mapping if name not in plan.header]
    if missing:
        raise InvalidField("mapping", f"the file has no column(s) {missing}")


def _row(
    line: int, cells: list[str], plan: ColumnPlan, zone: ZoneInfo, encoding: str
) -> Row | Rejected:
    width = plan.width
    if len(cells) > width and any(c.strip() for c in cells[width:]):
        return Rejected(line, f"the row has {len(cells)} fields; the header has {width}")
    if len(cells) < width:
        return Rejected(line, f"the row has {len(cells)} fields; the header has {width}")
    if any("\ufffd" in c for c in cells[:width]):
        return Rejected(line, f"the row holds bytes that are not valid {encoding}")
    scalars: dict[str, str] = {}
    fields: dict[str, str] = {}
    services: list[str] = []
    for name, target, raw in zip(
        plan.header[:width], plan.targets[:width], cells[:width], strict=True
    ):
        value = raw.strip()
        if target == "skip" or not value or value == "--":
            continue
        if target == "services":
            services.extend(s.strip() for s in re.split(r"[,;]", value) if s.strip())
        elif target is not None:
            scalars.setdefault(target, value)
        elif name:
            fields[name] = value
    attended = True
    if "attended" in scalars:
        answer = scalars["attended"].lower()
        if answer not in _YES | _NO:
            return Rejected(line, f"attended: expected yes or no, not {scalars['attended']!r}")
        attended = answer in _YES
    person: dict[str, Any] = {}
    for key in _COPIED:
        if key in scalars:
            person[key] = scalars[key]
    name = scalars.get("name") or " ".join(
        scalars[k] for k in ("first_name", "last_name") if k in scalars
    )
    if name:
        person["name"] = name
    if services:
        person["services"] = services
    utm = {k[4:]: scalars[k] for k in UTM_TARGETS if k in scalars}
    if utm:
        person["utm"] = utm
    if "minutes" in scalars:
        fields["webinar_minutes"] = scalars["minutes"]
    when_column = "joined_at" if attended else "registered_at"
    if when_column in scalars:
        try:
            person["occurred_at"] = parse_time(scalars[when_column], zone)
        except ValueError:
            label = plan.header[plan.targets.index(when_column)]
            return Rejected(line, f"{label}: not a date and time: {scalars[when_column]!r}")
    if fields:
        person["fields"] = fields
    return Row(line, person, attended)


def parse_time(raw: str, zone: ZoneInfo) -> datetime:
    """A report's time: ISO 8601, or one of Zoom's and spreadsheets' formats in the given zone."""
    text = raw.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        for fmt in _TIME_FORMATS:
            try:
                when = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"not a date and time: {raw!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=zone)
