"""Attendee CSV files: encodings, delimiters, Zoom's sections, mappings and bad rows. Pure."""

from __future__ import annotations

import codecs
import io
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.intake.normalize.fields import InvalidField
from services.intake.sources.attendee_csv import (
    Rejected,
    Row,
    check_mapping,
    open_text,
    read_rows,
    sniff_delimiter,
    sniff_encoding,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "intake"
MSK = ZoneInfo("Europe/Moscow")


def rows(
    data: bytes, mapping: dict[str, str] | None = None, timezone: str = "Europe/Moscow"
) -> list[Row | Rejected]:
    text, encoding, delimiter = open_text(io.BytesIO(data))
    return list(read_rows(text, delimiter, mapping=mapping, timezone=timezone, encoding=encoding))


class TestEncodings:
    def test_utf8_with_and_without_bom_and_cp1251(self) -> None:
        assert sniff_encoding("Имя".encode()) == "utf-8"
        assert sniff_encoding(codecs.BOM_UTF8 + "Имя".encode()) == "utf-8-sig"
        assert sniff_encoding("Имя".encode("cp1251")) == "cp1251"

    def test_a_character_cut_by_the_sample_end_is_still_utf8(self) -> None:
        assert sniff_encoding("Имя".encode()[:-1]) == "utf-8"

    @pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp1251"])
    def test_each_encoding_reads_the_same_names(self, encoding: str) -> None:
        data = "email,name\nanna@a.example,Анна Петрова\n".encode(encoding)
        (row,) = rows(data)
        assert isinstance(row, Row) and row.person["name"] == "Анна Петрова"
        # The BOM is not part of the first header name.
        assert row.person["email"] == "anna@a.example"

    def test_a_row_with_bytes_of_another_encoding_is_rejected_alone(self) -> None:
        data = b"email,name\na@a.example,Anna\nb@b.example,\xff\xfe\nc@c.example,Cleo\n"
        result = rows(data)
        # \xff is no Windows-1251 trouble, so the sample decides: not UTF-8 -> cp1251 reads all.
        assert [type(r) for r in result] == [Row, Row, Row]
        mixed = "email,name\na@a.example,Анна\n".encode() + b"b@b.example,\xc3\x28\n"
        result = rows(mixed * 1)
        assert isinstance(result[0], Row) and isinstance(result[1], Rejected)
        assert result[1].row == 3 and "not valid utf-8" in result[1].error


class TestDelimiters:
    @pytest.mark.parametrize("sep", [",", ";", "\t"])
    def test_the_most_frequent_delimiter_wins(self, sep: str) -> None:
        assert sniff_delimiter(f"a{sep}b{sep}c\n1{sep}2{sep}3\n") == sep

    def test_semicolons_with_commas_inside_values(self) -> None:
        assert sniff_delimiter('email;name;company\na@a.example;"Anna";"Acme, Inc"\n') == ";"


class TestZoomReport:
    def test_only_the_attendee_section_counts(self) -> None:
        result = rows((FIXTURES / "zoom_attendee_report.csv").read_bytes())
        assert all(isinstance(r, Row) for r in result)
        emails = [r.person["email"] for r in result if isinstance(r, Row)]
        # Host and panelist sections are passed over; a re-join is a second row.
        assert emails == [
            "anna@acme-corp.example",
            "grigory@beta.example",
            "dmitry@gamma.example",
            "anna@acme-corp.example",
        ]

    def test_attended_rows_carry_join_time_and_minutes(self) -> None:
        first = rows((FIXTURES / "zoom_attendee_report.csv").read_bytes())[0]
        assert isinstance(first, Row) and first.attended and first.row == 13
        assert first.person["occurred_at"] == datetime(2026, 10, 15, 10, 1, tzinfo=MSK)
        assert first.person["name"] == "Анна П."
        assert first.person["company"] == "Acme Corp" and first.person["job_title"] == "CEO"
        assert first.person["fields"] == {"webinar_minutes": "59"}

    def test_not_attended_rows_are_registrations(self) -> None:
        second = rows((FIXTURES / "zoom_attendee_report.csv").read_bytes())[1]
        assert isinstance(second, Row) and not second.attended
        assert second.person["occurred_at"] == datetime(2026, 10, 11, 13, 0, tzinfo=MSK)

    def test_emoji_and_right_to_left_marks_are_kept(self) -> None:
        third = rows((FIXTURES / "zoom_attendee_report.csv").read_bytes())[2]
        assert isinstance(third, Row) and third.person["name"] == "Dmitry 😀 \u200fדני"


class TestGenericCsv:
    def test_cp1251_semicolons_and_russian_headers(self) -> None:
        result = rows((FIXTURES / "generic_cp1251.csv").read_bytes())
        assert [r.person["name"] for r in result if isinstance(r, Row)] == [
            "Иван Сидоров",
            "Мария Кузнецова",
        ]
        first = result[0]
        assert isinstance(first, Row)
        assert first.person["phone"] == "8 (912) 000-11-22" and first.person["company"] == "Дельта"
        assert first.person["message"] == "Интересует SEO"
        assert first.person["occurred_at"] == datetime(2026, 10, 15, 10, 3, tzinfo=MSK)

    def test_an_explicit_mapping_and_unmapped_columns_as_fields(self) -> None:
        data = "Контакт,Почта ящик,Когда,Откуда узнали\nАнна,a@a.example,2026-10-15 10:00,блог\n"
        (row,) = rows(
            data.encode(), {"Контакт": "name", "Почта ящик": "email", "Когда": "joined_at"}
        )
        assert isinstance(row, Row)
        assert row.person["name"] == "Анна" and row.person["email"] == "a@a.example"
        assert row.person["fields"] == {"Откуда узнали": "блог"}

    def test_a_mapping_to_an_unknown_field_or_a_missing_column_is_refused(self) -> None:
        with pytest.raises(InvalidField, match="unknown lead fields"):
            check_mapping({"E-mail": "mail"})
        with pytest.raises(InvalidField, match="no column"):
            rows(b"email,name\na@a.example,A\n", {"Phone": "phone"})

    def test_attended_column_decides_registration_or_attendance(self) -> None:
        data = b"email,attended\na@a.example,yes\nb@b.example,no\nc@c.example,maybe\n"
        a, b, c = rows(data)
        assert isinstance(a, Row) and a.attended
        assert isinstance(b, Row) and not b.attended
        assert isinstance(c, Rejected) and "attended" in c.error


class TestBadRows:
    def test_short_long_and_badly_quoted_rows_are_rejected_with_their_line(self) -> None:
        data = (
            b"email,name,company\n"
            b"a@a.example,Anna,Acme\n"
            b"short@a.example,Bob\n"
            b"long@a.example,Carl,Co,extra\n"
            b'bad@a.example,"Dora"x,Co\n'
            b"e@a.example,Eve,Evil\n"
        )
        result = rows(data)
        assert [(type(r).__name__, r.row) for r in result] == [
            ("Row", 2),
            ("Rejected", 3),
            ("Rejected", 4),
            ("Rejected", 5),
            ("Row", 6),
        ]
        assert "2 fields; the header has 3" in result[1].error  # type: ignore[union-attr]
        assert "4 fields" in result[2].error  # type: ignore[union-attr]
        assert "quoted" in result[3].error  # type: ignore[union-attr]

    def test_a_quote_that_never_closes_is_reported(self) -> None:
        result = rows(b'email,name\na@a.example,Anna\nb@a.example,"Bob\nc@a.example,Cleo\n')
        assert isinstance(result[0], Row)
        assert isinstance(result[1], Rejected) and result[1].row == 3
        assert "never closed" in result[1].error

    def test_trailing_empty_cells_are_not_extra_fields(self) -> None:
        (row,) = rows(b"email,name,\na@a.example,Anna,,\n")
        assert isinstance(row, Row)

    def test_a_quoted_field_over_several_lines_is_one_record(self) -> None:
        result = rows(b'email,message\na@a.example,"line one\nline two"\nb@b.example,hi\n')
        assert [r.row for r in result] == [2, 4]
        assert isinstance(result[0], Row) and result[0].person["message"] == "line one\nline two"

    def test_blank_lines_are_skipped(self) -> None:
        assert len(rows(b"email\n\na@a.example\n\n")) == 1

    def test_unreadable_time_is_rejected(self) -> None:
        (row,) = rows(b"email,join time\na@a.example,the morning\n")
        assert isinstance(row, Rejected) and "join time" in row.error

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
            b"name,company\nAnna,Acme\n",
            b"just some text\nwith lines\n",
        ],
    )
    def test_a_file_without_an_attendee_header_is_refused_whole(self, data: bytes) -> None:
        with pytest.raises(InvalidField) as err:
            rows(data)
        assert err.value.field == "file"
