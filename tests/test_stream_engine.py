"""The stream engine with fake models: many sources at once, control from other threads, bounded lag,
people counted once across stats buckets, and every event valid against the published JSON Schema."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from fakes import GREEN, RED, FakeCamera, fake_detector, make_video, scene

from maskwatch.core.events import SourceStatus, SourceSummary, StatsBucket, TrackEnded, TrackStarted
from maskwatch.stream import AnalysedFrame, EngineConfig, SourceSpec, StreamEngine, json_schema, parse_event
from maskwatch.stream.sources import SourceError

pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra (pip install edgefirst-tracker)")

VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def cameras(**kinds):
    """A capture factory: ``rtsp://[user:pass@]fake/NAME`` opens ``kinds[NAME]()``; anything else is a file."""
    import cv2

    def factory(target):
        if isinstance(target, str) and target.startswith("rtsp://") and "fake/" in target:
            return kinds[target.rsplit("/", 1)[1]]()
        return cv2.VideoCapture(target)

    return factory


def collect(subscription, into: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.extend(subscription), daemon=True)
    thread.start()
    return thread


def by_type(events, cls, source=None):
    return [e for e in events if isinstance(e, cls) and (source is None or e.source == source)]


def check_valid(events) -> None:
    for event in events:
        data = json.loads(event.to_json())
        VALIDATOR.validate(data)  # the published schema accepts it ...
        assert parse_event(data) == event  # ... and it reads back as the same typed event


def test_two_files_at_once_people_counted_once_and_every_event_valid(tmp_path):
    a = make_video(tmp_path / "a.mp4", 30, people=2)
    b = make_video(tmp_path / "b.mp4", 24, people=3)
    engine = StreamEngine(fake_detector(), stop_when_done=True, stats_interval=0.05)
    events = engine.events()
    engine.add_source(str(a), name="cam-a")
    engine.add_source(SourceSpec(uri=str(b), name="cam-b"))
    engine.start()
    got = list(events)  # ends when both files are done
    assert engine.join(5)
    check_valid(got)
    for name, people in (("cam-a", 2), ("cam-b", 3)):
        ended = by_type(got, TrackEnded, name)
        assert len(ended) == people and len(by_type(got, TrackStarted, name)) == people
        masked = sum(e.label == "with_mask" for e in ended)
        assert masked == (people + 1) // 2  # even squares are green
        buckets = by_type(got, StatsBucket, name)
        assert len(buckets) >= 2 and buckets[-1].final
        assert sum(b.n_people for b in buckets) == people  # each person once, over all buckets
        assert sum(b.people["with_mask"] for b in buckets) == masked
        summary = by_type(got, SourceSummary, name)[0]
        assert summary.frames == (30 if name == "cam-a" else 24) and summary.people.n_people == people
        assert sum(b.frames_analysed for b in buckets) == summary.frames
        states = [e.state for e in by_type(got, SourceStatus, name)]
        assert states[0] == "connecting" and states[-1] == "ended"
    # the two sources ran concurrently: their frames interleave rather than one after the other
    order = [e.source for e in got if isinstance(e, TrackStarted)]
    assert {"cam-a", "cam-b"} <= set(order)


def test_stop_from_another_thread_returns_within_a_second_and_flushes_open_tracks():
    engine = StreamEngine(fake_detector(), capture_factory=cameras(live=lambda: FakeCamera(fps=30)), stats_interval=60)
    events = engine.events()
    got: list = []
    reader = collect(events, got)
    engine.add_source("rtsp://fake/live", name="door")
    engine.start()
    deadline = time.monotonic() + 10
    while not any(isinstance(e, TrackStarted) for e in list(got)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(isinstance(e, TrackStarted) for e in got), "no person started"
    result = {}
    stopper = threading.Thread(
        target=lambda: result.update(t0=time.monotonic(), ok=engine.stop(1.0), t1=time.monotonic())
    )
    stopper.start()
    stopper.join(5)
    assert result["ok"] and result["t1"] - result["t0"] < 1.0
    reader.join(2)
    assert not reader.is_alive()  # the subscription ended
    started = {e.track_id for e in by_type(got, TrackStarted)}
    ended = {e.track_id for e in by_type(got, TrackEnded)}
    assert started and started == ended  # the open track was ended, not lost
    last = by_type(got, StatsBucket)[-1]
    assert last.final and last.n_people == len(ended)
    assert by_type(got, SourceStatus)[-1].state == "ended"
    check_valid(got)


def test_add_and_remove_sources_while_running(tmp_path):
    engine = StreamEngine(
        fake_detector(), capture_factory=cameras(one=lambda: FakeCamera(fps=25), two=lambda: FakeCamera(fps=25))
    )
    got: list = []
    reader = collect(engine.events(), got)
    engine.start()
    engine.add_source("rtsp://fake/one", name="one")
    time.sleep(0.6)
    engine.add_source("rtsp://fake/two", name="two")
    with pytest.raises(SourceError, match="already running"):
        engine.add_source("rtsp://fake/two", name="two")
    time.sleep(0.6)
    assert sorted(engine.sources) == ["one", "two"]
    assert engine.remove_source("one", wait=2.0)
    assert engine.sources == ["two"]
    time.sleep(0.4)
    assert engine.stop(1.0)
    reader.join(2)
    one = by_type(got, SourceSummary, "one")[0]
    two = by_type(got, SourceSummary, "two")[0]
    assert one.frames > 5 and two.frames > 5
    assert [e.reason for e in by_type(got, SourceStatus, "one")][-1] == "removed"
    frames_after_removal = [e for e in got if getattr(e, "source", None) == "one"][-1]
    assert isinstance(frames_after_removal, SourceStatus)  # nothing from "one" after its end
    with pytest.raises(KeyError):
        engine.remove_source("one")
    check_valid(got)


def test_a_failing_and_a_hanging_source_do_not_stop_the_others(tmp_path):
    video = make_video(tmp_path / "ok.mp4", 20)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    engine = StreamEngine(
        fake_detector(),
        stop_when_done=False,
        stall_timeout=0.3,
        failed_after=60,
        capture_factory=cameras(hung=lambda: FakeCamera(hang=True)),
    )
    got: list = []
    reader = collect(engine.events(), got)
    engine.add_source(str(broken), name="broken")
    engine.add_source(str(video), name="ok")
    engine.add_source("rtsp://fake/hung", name="hung")
    engine.start()
    deadline = time.monotonic() + 10
    while not by_type(list(got), SourceSummary, "ok") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert engine.stop(1.0)
    reader.join(2)
    failed = by_type(got, SourceStatus, "broken")[-1]
    assert failed.state == "failed" and "cannot open video" in failed.reason
    assert by_type(got, SourceSummary, "broken")[0].error
    assert by_type(got, SourceSummary, "ok")[0].frames == 20  # the good file was read to the end
    hung = [e.state for e in by_type(got, SourceStatus, "hung")]
    assert hung[0] == "connecting" and "ended" in hung  # it never delivered, and stop() still ended it
    check_valid(got)


class CrashingCamera(FakeCamera):
    """A camera whose decoder crashes once (an unexpected error inside a read) after ten frames."""

    crashes = 0

    def read(self):
        if CrashingCamera.crashes == 0 and self.index >= 10:
            CrashingCamera.crashes += 1
            raise RuntimeError("the decoder crashed")
        return super().read()


def test_a_decoder_that_crashes_restarts_that_camera_only():
    """Issue 18: a decoder crash is not a dead end: the camera is started again (reported reconnecting, with
    the reason and the next attempt) and the other camera never notices."""
    CrashingCamera.crashes = 0
    engine = StreamEngine(
        fake_detector(), backoff=0.1, max_backoff=0.2,
        capture_factory=cameras(crashy=lambda: CrashingCamera(fps=25), steady=lambda: FakeCamera(fps=25)),
    )  # fmt: skip
    got: list = []
    reader = collect(engine.events(), got)
    engine.add_source("rtsp://fake/crashy", name="crashy")
    engine.add_source("rtsp://fake/steady", name="steady")
    engine.start()
    try:
        assert wait_for(lambda: CrashingCamera.crashes == 1, 10)
        frames = engine.source_stats()["crashy"].frames
        assert wait_for(lambda: engine.source_stats()["crashy"].frames > frames + 10, 10), engine.source_stats()
        assert engine.source_stats()["crashy"].restarts == 1
    finally:
        engine.stop(2.0)
        reader.join(5)
    states = [(e.state, e.reason) for e in by_type(got, SourceStatus, "crashy")]
    restarted = [i for i, (state, reason) in enumerate(states) if state == "reconnecting"]
    assert restarted and "the decoder crashed" in states[restarted[0]][1], states
    assert ("live", None) in states[restarted[0] :]  # live again
    event = by_type(got, SourceStatus, "crashy")[restarted[0]]
    assert event.next_attempt is not None and event.attempts == 1
    assert by_type(got, SourceSummary, "crashy")[0].restarts == 1
    assert by_type(got, SourceSummary, "crashy")[0].error is None
    assert [e.state for e in by_type(got, SourceStatus, "steady")] == ["connecting", "live", "ended"]
    check_valid(got)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_live_source_faster_than_analysis_keeps_lag_bounded():
    """A 100 FPS camera and ~40 ms of analysis per frame: the latest frame wins, so the lag stays about
    one analysis time instead of growing, and the frames left out are counted as dropped."""
    detector = fake_detector(finder_delay=0.04)
    engine = StreamEngine(detector, capture_factory=cameras(fast=lambda: FakeCamera(fps=100)), stats_interval=0.5)
    got: list = []
    reader = collect(engine.events(), got)
    engine.add_source("rtsp://fake/fast", name="fast")
    engine.start()
    time.sleep(2.5)
    assert engine.stop(1.0)
    reader.join(2)
    summary = by_type(got, SourceSummary, "fast")[0]
    assert summary.dropped > summary.frames  # most frames were replaced by newer ones
    # a queue of every frame would lag ~2 s by now; the latest frame lags about one analysis interval
    interval = summary.seconds / summary.frames  # ~0.04 s idle, more on a loaded machine
    assert summary.lag.p95 is not None and summary.lag.p95 < 3 * interval + 0.05
    buckets = [b for b in by_type(got, StatsBucket, "fast") if b.frames_analysed]
    assert buckets[-1].lag.p95 < 3 * interval + 0.05  # no growth from bucket to bucket
    assert sum(b.frames_dropped for b in by_type(got, StatsBucket, "fast")) == summary.dropped


def test_fair_scheduling_across_sources(tmp_path):
    videos = [make_video(tmp_path / f"v{k}.mp4", 40, people=1 + k) for k in range(3)]
    engine = StreamEngine(fake_detector(finder_delay=0.005), stop_when_done=True)
    got: list = []
    subscription = engine.events()
    for k, path in enumerate(videos):
        engine.add_source(str(path), name=f"v{k}")
    engine.start()
    got = list(subscription)
    rates = [by_type(got, SourceSummary, f"v{k}")[0].analysed_fps for k in range(3)]
    assert min(rates) / max(rates) > 0.8


def test_classification_budget_skips_decided_tracks_and_keeps_verdicts(tmp_path):
    video = make_video(tmp_path / "walk.mp4", 40, people=3)

    def run(every):
        detector = fake_detector()
        engine = StreamEngine(detector, stop_when_done=True, classify_every=every)
        events = engine.events()
        engine.add_source(str(video), name="v")
        engine.start()
        got = list(events)
        return detector.classifier.crops, sorted((e.track_id, e.label) for e in by_type(got, TrackEnded))

    all_crops, all_verdicts = run(None)
    budget_crops, budget_verdicts = run(5)
    assert budget_verdicts == all_verdicts and len(all_verdicts) == 3
    assert budget_crops < 0.5 * all_crops


def test_budget_is_off_for_the_accurate_preset(tmp_path):
    engine = StreamEngine(fake_detector(), classify_every=5, video_preset="accurate")
    engine.add_source(str(make_video(tmp_path / "v.mp4", 3)), name="v")
    runner = engine._pending.get_nowait()[1]
    assert runner.detector.classify_tta
    assert runner.make_tracker(engine.compliant_classes).classify_every is None


def test_frame_subscribers_get_pixels_and_bad_specs_fail_at_once(tmp_path):
    video = make_video(tmp_path / "v.mp4", 6)
    engine = StreamEngine(fake_detector(), stop_when_done=True, emit_frames=True)
    frames = engine.events(frames=True)
    events = engine.events()
    engine.add_source(str(video), name="v")
    with pytest.raises(SourceError, match="no such file"):
        engine.add_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match="unknown preset"):
        engine.add_source(str(video), name="w", preset="turbo")
    engine.start()
    everything = list(frames)
    analysed = [a for a in everything if isinstance(a, AnalysedFrame)]
    assert any(isinstance(e, SourceSummary) for e in everything)  # events come in the same stream, in order
    assert len(analysed) == 6 and analysed[0].frame.image.shape == (240, 320, 3)
    assert [a.event.frame for a in analysed] == list(range(6))
    plain = list(events)
    assert sum(e.type == "frame" for e in plain) == 6  # emit_frames: frame events for event subscribers too
    check_valid(plain)


def test_engine_config_is_validated():
    with pytest.raises(ValueError, match="stats_interval"):
        EngineConfig(stats_interval=0)
    with pytest.raises(ValueError, match="classify_every"):
        EngineConfig(classify_every=0)
    with pytest.raises(ValueError, match="video_preset"):
        EngineConfig(video_preset="turbo")


def test_published_schema_file_is_current():
    """docs/schema/maskwatch.event-1.json is what json_schema() produces (regenerate it when events change:
    python -m maskwatch.core.events > docs/schema/maskwatch.event-1.json)."""
    path = Path(__file__).resolve().parents[1] / "docs" / "schema" / "maskwatch.event-1.json"
    assert json.loads(path.read_text()) == json_schema()


def test_snapshots_are_blurred_views_handed_to_the_sink(tmp_path):
    video = make_video(tmp_path / "v.mp4", 30, people=2)

    def run(blur):
        stored = {}

        def sink(source, track_id, rgb):
            stored[track_id] = rgb
            return f"snap/{source}/{track_id}.jpg"

        engine = StreamEngine(
            fake_detector(), stop_when_done=True, snapshots=True, snapshot_blur=blur, snapshot_sink=sink
        )
        events = engine.events()
        engine.add_source(str(video), name="v")
        engine.start()
        return by_type(list(events), TrackEnded), stored

    ended, blurred = run(True)
    _, raw = run(False)
    assert len(ended) == 2 and all(e.snapshot == f"snap/v/{e.track_id}.jpg" for e in ended)

    def sharpness(rgb):
        return float(np.abs(np.diff(rgb.astype(np.int16), axis=1)).max())  # the steepest edge

    for e in ended:
        assert blurred[e.track_id].shape == raw[e.track_id].shape
        assert blurred[e.track_id].shape[0] > 40  # the face grown by half its size on each side
        assert sharpness(blurred[e.track_id]) < 0.5 * sharpness(raw[e.track_id])  # the face is blurred


def test_a_person_who_leaves_mid_video_gets_their_snapshot(tmp_path):
    """A person whose track is retired while the source runs (not closed at its end) still has their
    snapshot handed to the sink."""
    import cv2
    from fakes import GREEN, scene

    path = tmp_path / "leaves.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for i in range(60):  # in view for 12 frames, then gone for 48 (retired after 20 at 10 FPS)
        rgb = scene([(20 + 5 * i, 60, 50, GREEN)] if i < 12 else [])
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    stored = {}

    def sink(source, track_id, rgb):
        stored[track_id] = rgb
        return f"snap/{track_id}.jpg"

    engine = StreamEngine(fake_detector(), stop_when_done=True, snapshots=True, snapshot_sink=sink, emit_frames=True)
    events = engine.events()
    engine.add_source(str(path), name="v")
    engine.start()
    got = list(events)
    ended = by_type(got, TrackEnded)
    assert len(ended) == 1 and ended[0].last_frame == 11
    frames = [e for e in got if e.type == "frame"]
    assert got.index(ended[0]) < got.index(frames[-1])  # retired while the video ran, not closed at its end
    assert ended[0].snapshot == f"snap/{ended[0].track_id}.jpg" and set(stored) == {ended[0].track_id}


def test_frames_dropped_between_two_buckets_are_counted_in_one_of_them(tmp_path):
    """A camera drops frames while the analysis thread flushes a bucket: every drop lands in exactly one
    bucket (the count is read once per flush; two reads let a drop in between fall through)."""
    import threading

    from maskwatch.stream import EngineConfig
    from maskwatch.stream.runner import make_runner

    class Dropping:  # the buffer's counter, as a capture thread racing the flush would move it
        def __init__(self):
            self.reads = 0

        @property
        def dropped(self):
            self.reads += 1
            return self.reads  # one more drop each time anyone looks

    now = [1000.0]
    runner = make_runner(
        SourceSpec(uri="rtsp://fake/cam"), config=EngineConfig(stats_interval=10), detectors=lambda _: fake_detector(),
        classes=["with_mask", "without_mask"], clock=lambda: now[0], wake=threading.Event(),
    )  # fmt: skip
    counter = Dropping()
    runner.buffer = counter  # type: ignore[assignment]
    runner.bucket.dropped_at_start = counter.dropped
    events = []
    for _ in range(5):
        now[0] += 10
        events.extend(runner.due_buckets(now[0]))
    events.append(runner.flush_bucket(now[0], final=True))
    assert sum(e.frames_dropped for e in events) == runner.bucket.dropped_at_start - 1


def test_live_stats_redaction_and_a_still_image_slideshow(tmp_path):
    from fakes import GREEN, save_rgb, scene

    folder = tmp_path / "slides"
    save_rgb(folder / "a.png", scene([(40, 40, 40, GREEN)]))
    save_rgb(folder / "b.png", scene([(200, 120, 40, GREEN)]))
    engine = StreamEngine(fake_detector(), capture_factory=cameras(cam=lambda: FakeCamera(fps=25)))
    got: list = []
    reader = collect(engine.events(), got)
    engine.add_source(SourceSpec(uri=str(folder), name="demo", realtime=True, loop=True, hold=0.4, target_fps=10))
    secret = engine.add_source("rtsp://admin:hunter2@fake/cam")
    assert secret == "rtsp://***@fake/cam"  # credentials never appear in names, events or logs
    engine.start()
    time.sleep(2.0)
    live = engine.source_stats()
    assert set(live) == {"demo", secret}
    assert 5 <= live["demo"].analysed_fps <= 12 and live["demo"].state == "live" and live["demo"].people_now == 1
    assert live[secret].frames > 10 and live[secret].last_analysed is not None
    assert engine.stop(1.0)
    reader.join(2)
    assert "hunter2" not in "".join(e.to_json() for e in got)
    people = by_type(got, TrackEnded, "demo")
    # each slide's face is tracked as a person (one that comes back within ByteTrack's buffer is the same one)
    assert len(people) >= 2 and {p.label for p in people} == {"with_mask"}


def test_each_preset_classifies_with_its_own_classifier_in_one_round(tmp_path):
    from fakes import GREEN, BlobFinder, ColourClassifier, save_rgb, scene

    from maskwatch.detection.pipeline import MaskDetector

    fp32, int8 = ColourClassifier(), ColourClassifier()
    detector = MaskDetector(fp32, BlobFinder(), scales="accurate", int8_classifier=int8, box_adjust=None)
    engine = StreamEngine(detector, stop_when_done=True)  # videos: fast (INT8), still images: accurate (fp32)
    events = engine.events()
    engine.add_source(str(make_video(tmp_path / "v.mp4", 10, people=1)), name="video")
    save_rgb(tmp_path / "stills" / "a.png", scene([(40, 40, 40, GREEN)]))
    engine.add_source(str(tmp_path / "stills"), name="stills")
    engine.start()
    got = list(events)
    assert by_type(got, SourceSummary, "video")[0].frames == 10 and by_type(got, SourceSummary, "stills")[0].frames
    assert int8.crops > 0 and fp32.crops == 6  # the still image's face on the accurate preset's 6 crops


def test_a_consumer_busy_at_shutdown_still_sees_the_end(tmp_path):
    """The end of a subscription is known even when its queue was full as the engine ended (a consumer that
    was busy for seconds used to wait forever for an end marker that had been dropped)."""
    video = make_video(tmp_path / "a.mp4", 30, people=2)
    engine = StreamEngine(fake_detector(), stop_when_done=True, stats_interval=0.05)
    events = engine.events(maxsize=2)
    engine.add_source(str(video), name="cam")
    engine.start()
    got = [events.get(timeout=10)]  # the engine is running; now stop reading until it is done
    engine.stop(0.5)
    assert engine.join(10)
    assert events.queue.full()  # the end marker found no room
    reader_got: list = []
    reader = collect(events, reader_got)
    reader.join(5)
    assert not reader.is_alive(), "the consumer never saw the end"
    assert got + reader_got  # what was queued is still delivered before the end
    with pytest.raises(StopIteration):
        events.get(timeout=0.2)


# -- privacy (issue 19): zones blacked out before analysis, faces lost a moment ago still blurred ---------


def _analysed(engine: StreamEngine, spec: SourceSpec) -> list[AnalysedFrame]:
    frames = engine.events(frames=True)
    engine.add_source(spec)
    engine.start()
    return [a for a in frames if isinstance(a, AnalysedFrame)]


def test_privacy_zones_are_black_before_the_frame_is_analysed_or_handed_on(tmp_path):
    video = make_video(tmp_path / "v.mp4", 8, people=2)  # two people at y 20..60 and 90..130
    lower = [(0.0, 0.3), (1.0, 0.3), (1.0, 1.0), (0.0, 1.0)]  # everything under y = 72: the second person
    engine = StreamEngine(fake_detector(), stop_when_done=True, emit_frames=True)
    analysed = _analysed(engine, SourceSpec(uri=str(video), name="v", privacy_zones=[lower]))
    assert len(analysed) == 8
    for item in analysed:
        assert not item.frame.image[73:].any()  # what subscribers (live views, snapshots, agents) get: black
        assert item.frame.image[:72].any()
        assert len(item.result.candidates) == 1 and item.result.candidates.boxes[0, 3] <= 72  # the zone is not analysed
    # from the engine's settings: camera_defaults.privacy_zones reach every source
    config = EngineConfig.model_validate({"camera_defaults": {"privacy_zones": [lower]}})
    assert config.source(str(video), "w", None).privacy_zones == [lower]
    with pytest.raises(ValueError):
        EngineConfig.model_validate({"camera_defaults": {"privacy_zones": [[(0.0, 0.0), (2.0, 0.0), (0.0, 1.0)]]}})


def test_a_face_the_detector_loses_for_a_few_frames_stays_blurred(tmp_path):
    import cv2
    from fakes import GREEN, scene

    from maskwatch.detection.privacy import blur_faces

    path = tmp_path / "flicker.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    present = [k not in (10, 11, 12) for k in range(20)]  # the detector "loses" the face on frames 10-12
    for seen in present:
        writer.write(cv2.cvtColor(scene([(100, 80, 40, GREEN)] if seen else []), cv2.COLOR_RGB2BGR))
    writer.release()
    engine = StreamEngine(fake_detector(), stop_when_done=True, emit_frames=True)
    analysed = _analysed(engine, SourceSpec(uri=str(path), name="f"))
    assert len(analysed) == 20
    for item, seen in zip(analysed, present, strict=True):
        if seen:
            assert len(item.result.candidates) == 1
        else:  # nothing found, yet where the face was is blurred (the blur hold)
            assert len(item.result.candidates) == 0 and len(item.result.held_boxes) == 1
            x0, _, _, y1 = item.result.held_boxes[0]
            assert abs(x0 - 100) < 6 and abs(y1 - 120) < 6
            noise = np.random.default_rng(0).integers(0, 256, item.frame.image.shape, dtype=np.uint8)
            out = blur_faces(noise, item.result)
            assert (out[85:115, 105:135] != noise[85:115, 105:135]).mean() > 0.9


class LeavingCamera(FakeCamera):
    """A 25 FPS camera: a person (masked) in view for 1.6 s, then nobody for 3.2 s, then a newcomer (unmasked) in
    the very same place for 1.6 s, then nobody."""

    def read(self):
        ok, _ = super().read()
        if not ok:
            return ok, None
        i = self.index - 1
        colour = GREEN if i < 40 else RED if 120 <= i < 160 else None
        rgb = scene([] if colour is None else [(140, 100, 40, colour)])
        return True, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def test_a_person_leaving_a_camera_analysed_at_a_few_fps_ends_on_time_and_nobody_inherits_their_track():
    """The engine analyses a 25 FPS camera at about 4 FPS (slow detection, as on a busy node): the person who
    leaves gets ``track_ended`` within 3 s, and the newcomer stepping into their place 3.2 s later is a second
    person (before, the tracker counted the camera's frames: no end for ~14 s, and the newcomer inherited)."""
    cameras_made: list[LeavingCamera] = []

    def camera() -> LeavingCamera:
        cameras_made.append(LeavingCamera(fps=25))
        return cameras_made[-1]

    engine = StreamEngine(fake_detector(finder_delay=0.25), capture_factory=cameras(door=camera), stats_interval=60)
    got: list[tuple[float, object]] = []
    reader = threading.Thread(target=lambda: got.extend((time.monotonic(), e) for e in engine.events()), daemon=True)
    reader.start()
    engine.add_source("rtsp://fake/door", name="door")
    engine.start()
    deadline = time.monotonic() + 20
    while (not cameras_made or time.monotonic() < cameras_made[0].start + 9.0) and time.monotonic() < deadline:
        time.sleep(0.1)  # 9 s of the camera: both people have left 2.6 s ago
    assert engine.stop(1.0)
    reader.join(2)
    ended = [(t, e) for t, e in got if isinstance(e, TrackEnded)]
    assert [e.label for _, e in ended] == ["with_mask", "without_mask"]  # two people, each ended once
    left = cameras_made[0].start + 40 / 25  # the first person left the view here
    assert ended[0][0] - left <= 3.0, f"track_ended {ended[0][0] - left:.1f} s after the person left"
    summary = next(e for _, e in got if isinstance(e, SourceSummary))
    assert summary.people is not None and summary.people.n_people == 2


def test_a_frame_buffer_gives_back_what_came_with_a_frame_once_the_frame_leaves_it():
    """A decoder process hears through ``release`` that its frame was taken (then it hands over the next):
    called once for a frame taken, superseded (latest wins), forgotten (sealed) or refused (closed), never
    while the frame waits."""
    from maskwatch.stream.buffers import FrameBuffer
    from maskwatch.stream.sources import Frame

    stop, released = threading.Event(), []
    buffer = FrameBuffer(1, latest_wins=True, wake=threading.Event())

    def put(index: int) -> bool:
        frame = Frame(np.full((2, 2, 3), index, np.uint8), "cam", index, kind="stream")
        return buffer.put(frame, stop, release=lambda: released.append(index))

    assert put(0) and released == []
    assert put(1) and released == [0] and buffer.dropped == 1  # superseded
    taken = buffer.take()
    assert taken is not None and taken.index == 1 and released == [0, 1]
    assert buffer.take() is None and released == [0, 1]
    assert put(2) and released == [0, 1]
    buffer.seal()  # forgotten
    assert released == [0, 1, 2]
    assert not put(3) and released == [0, 1, 2, 3]  # refused
    queue = FrameBuffer(2, latest_wins=False, wake=threading.Event())  # a file's queue: release on take too
    seen: list[int] = []
    queue.put(Frame(np.zeros((2, 2, 3), np.uint8), "f", 7, kind="video"), stop, release=lambda: seen.append(7))
    assert seen == [] and queue.take() is not None and seen == [7]
