"""Reading behaviour logs and item metadata: every accepted format, and errors with file:line."""

import pytest

from slmkit.data import DataError
from slmkit.recommend.data import read_logs, read_titles, user_sequences


def test_csv_with_header_and_optional_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,rating,timestamp,event\nalice,book-1,4.5,100,view\nbob,book-2,,200,buy\n")
    rows = read_logs([path])
    assert [(r.user, r.item, r.timestamp, r.rating, r.event) for r in rows] == [
        ("alice", "book-1", 100.0, 4.5, "view"), ("bob", "book-2", 200.0, None, "buy")]


def test_movielens_u_data_without_header(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    rows = read_logs([path])
    assert (rows[0].user, rows[0].item, rows[0].rating, rows[0].timestamp) == ("196", "242", 3.0, 881250949.0)


def test_recbole_typed_header_and_three_column_tsv(tmp_path):
    typed = tmp_path / "x.inter"
    typed.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t4\t10\n")
    plain = tmp_path / "x.tsv"
    plain.write_text("7\t8\t30\n")
    assert (read_logs([typed])[0].item, read_logs([plain])[0].timestamp) == ("5", 30.0)


def test_jsonl_with_iso_timestamps(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"user": 1, "item": "a", "timestamp": "1970-01-01T00:01:00Z"}\n\n'
                    '{"user": 1, "item": "b", "timestamp": "1970-01-01T00:00:30"}\n')
    assert user_sequences(read_logs([path])) == {"1": ["b", "a"]}


def test_equal_timestamps_keep_log_order(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\nu,c,5\nu,a,5\nu,b,1\n")
    assert user_sequences(read_logs([path])) == {"u": ["b", "c", "a"]}


@pytest.mark.parametrize(("text", "where", "words"), [
    ("user,item,timestamp\nu,a,yesterday\n", ":2", "ISO 8601"),
    ("user,item,timestamp\nu,a\n", ":2", "2 columns"),
    ("user,item,timestamp\nu,,3\n", ":2", "missing item"),
    ("user,item\nu,a\n", ":1", "no timestamp column"),
    ("a,b,c,d,e\n", ":1", "no header"),
    ("user,item,timestamp\nu,a,nan\n", ":2", "not a finite number"),
])
def test_bad_rows_name_file_and_line(tmp_path, text, where, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        read_logs([path])
    assert f"{path}{where}:" in caught.value.message and words in caught.value.message


def test_bad_jsonl_lines_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"user": "u", "item": "a", "timestamp": 1}\n{"user": "u", "item": "a"\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        read_logs([path])
    path.write_text('[1, 2, 3]\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:1: expected a JSON object"):
        read_logs([path])


def test_missing_or_empty_log(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_logs([tmp_path / "nope.csv"])
    (tmp_path / "empty.csv").write_text("user,item,timestamp\n")
    with pytest.raises(DataError, match="no interactions"):
        read_logs([tmp_path / "empty.csv"])


def test_titles_from_u_item_latin1_and_typed_header(tmp_path):
    u_item = tmp_path / "u.item"
    u_item.write_bytes("1|Toy Story (1995)|01-Jan-1995||http://x|0|0\n2|Café (1996)|x||y|0\n".encode("latin-1"))
    assert read_titles(u_item) == {"1": "Toy Story (1995)", "2": "Café (1996)"}
    typed = tmp_path / "ml.item"
    typed.write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\n1\tToy Story\t1995\n")
    assert read_titles(typed) == {"1": "Toy Story"}


def test_the_real_movielens_files_parse():
    from pathlib import Path

    folder = Path("/work/shared/data/ml-100k")
    if not folder.is_dir():
        pytest.skip("MovieLens 100k is not on this machine")
    sequences = user_sequences(read_logs([folder / "ml-100k.inter"]))
    assert len(sequences) == 943 and sum(map(len, sequences.values())) == 100_000
    assert read_titles(folder / "ml-100k.item")["1"] == "Toy Story"
