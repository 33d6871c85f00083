"""Topic files of an embedded run: read back by offset, and never an earlier run's lines."""

from flows.dataflow.rounds import Rounds
from flows.dataflow.sinks import TopicFileSink
from flows.dataflow.sources import LineTail


def test_a_reader_sees_only_whole_lines_and_keeps_its_offset(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    tail = LineTail(path)
    assert tail.read() == [b'{"a":1}', b'{"b":2}']
    with path.open("ab") as f:
        f.write(b"3}\n")
    assert tail.read() == [b'{"c":3}']
    assert tail.offset == path.stat().st_size
    assert LineTail(path, 8).read(end=16) == [b'{"b":2}']  # bytes past `end` wait


def test_an_earlier_runs_lines_are_never_read_back(tmp_path):
    stale = tmp_path / "actions.app.jsonl"
    stale.write_bytes(b'{"earlier":"run"}\n')
    sink = TopicFileSink(tmp_path, ["actions.app", "events"], Rounds(["0"], ("actions.",)))
    written = sink.written()
    assert written.read("actions.app", 0) == ([], 0)  # this run has not opened it yet
    part = sink.build_part("out", "actions.app", None)
    assert not stale.exists()  # a fresh run starts the topic over
    part.write_batch([b'{"now":1}'])
    assert written.read("actions.app", 0) == ([b'{"now":1}'], 10)
    part.close()


def test_a_resumed_topic_is_cut_back_to_its_snapshot_and_read_from_there(tmp_path):
    sink = TopicFileSink(tmp_path, ["actions.app"], Rounds(["0"], ("actions.",)))
    part = sink.build_part("out", "actions.app", None)
    part.write_batch([b'{"n":1}'])
    offset = part.snapshot()
    part.write_batch([b'{"n":2}'])  # written after the snapshot: a crash loses it
    part.close()

    resumed = TopicFileSink(tmp_path, ["actions.app"], Rounds(["0"], ("actions.",)))
    part = resumed.build_part("out", "actions.app", offset)
    assert resumed.written().read("actions.app", 0) == ([b'{"n":1}'], offset)
    part.write_batch([b'{"n":2}'])  # the resumed run writes it again, once
    assert (tmp_path / "actions.app.jsonl").read_bytes() == b'{"n":1}\n{"n":2}\n'
    part.close()
