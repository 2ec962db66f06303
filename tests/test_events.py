"""Strong-label TSVs: round trip, the DCASE row forms, and errors that name the file and line."""

from __future__ import annotations

import re

import pytest

from kdsed.events import Event, MetadataError, read_strong_tsv, write_strong_tsv


def sample_table() -> dict[str, list[Event]]:
    return {
        "b.wav": [Event(5.25, 9.0, "Speech"), Event(0.0, 1.5, "Dog"), Event(0.0, 1.5, "Cat")],
        "a.wav": [Event(2.0, 10.0, "Vacuum_cleaner")],
        "empty.wav": [],
    }


def test_round_trip_keeps_events_and_empty_clips(tmp_path):
    path = tmp_path / "sub" / "strong.tsv"
    write_strong_tsv(path, sample_table())
    assert path.read_text().splitlines() == [
        "filename\tonset\toffset\tevent_label",
        "a.wav\t2.000\t10.000\tVacuum_cleaner",
        "b.wav\t0.000\t1.500\tCat",
        "b.wav\t0.000\t1.500\tDog",
        "b.wav\t5.250\t9.000\tSpeech",
        "empty.wav",
    ]
    table = read_strong_tsv(path)
    assert table == {name: sorted(events) for name, events in sample_table().items()}
    assert table["empty.wav"] == [] and table["b.wav"][2].duration_s == pytest.approx(3.75)


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "strong.tsv"
    path.write_text("old content\n")
    write_strong_tsv(path, sample_table())
    assert [p.name for p in tmp_path.iterdir()] == ["strong.tsv"]
    assert read_strong_tsv(path)["a.wav"] == [Event(2.0, 10.0, "Vacuum_cleaner")]


def test_header_is_optional_and_blank_lines_and_trailing_tabs_are_ignored(tmp_path):
    path = tmp_path / "no_header.tsv"
    path.write_text("a.wav\t0.5\t1.25\tDog\n\nempty.wav\t\t\t\na.wav\t3\t4\tCat\n")
    assert read_strong_tsv(path) == {"a.wav": [Event(0.5, 1.25, "Dog"), Event(3.0, 4.0, "Cat")], "empty.wav": []}


def test_filename_only_header_and_empty_file(tmp_path):
    listing = tmp_path / "list.tsv"
    listing.write_text("filename\nx.wav\n")
    assert read_strong_tsv(listing) == {"x.wav": []}
    empty = tmp_path / "empty.tsv"
    write_strong_tsv(empty, {})
    assert empty.read_text() == "filename\tonset\toffset\tevent_label\n"
    assert read_strong_tsv(empty) == {}


@pytest.mark.parametrize("row, message", [
    ("a.wav\t0.5\t1.0\tGiraffe", "unknown class label 'Giraffe'; expected one of Alarm_bell_ringing"),
    ("a.wav\t0.5\t1.0", "malformed row ['a.wav', '0.5', '1.0']"),
    ("a.wav\t0.5\t1.0\tDog\textra", "malformed row"),
    ("\t0.5\t1.0\tDog", "malformed row"),
    ("a.wav\t2.0\t1.0\tDog", "onset 2.0 >= offset 1.0 for a.wav"),
    ("a.wav\t1.0\t1.0\tDog", "onset 1.0 >= offset 1.0"),
    ("a.wav\tsoon\t1.0\tDog", "onset 'soon' / offset '1.0' are not numbers"),
    ("a.wav\t-0.5\t1.0\tDog", "onset -0.5 / offset 1.0 must be finite and >= 0"),
    ("a.wav\t0.5\tinf\tDog", "must be finite"),
])
def test_errors_name_file_and_line(tmp_path, row, message):
    path = tmp_path / "strong.tsv"
    path.write_text(f"filename\tonset\toffset\tevent_label\nok.wav\t0\t1\tCat\n{row}\n")
    with pytest.raises(MetadataError) as info:
        read_strong_tsv(path)
    assert str(info.value).startswith(f"{path}, line 3: ")
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(MetadataError, match=re.escape(f"{tmp_path / 'nope.tsv'}: strong-label file not found")):
        read_strong_tsv(tmp_path / "nope.tsv")


def test_writer_output_is_always_readable(tmp_path):
    path = tmp_path / "strong.tsv"
    write_strong_tsv(path, {"a.wav": [Event(1.0001, 1.0004, "Dog")]})
    assert len(read_strong_tsv(path)["a.wav"]) == 1
