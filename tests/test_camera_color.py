"""Grey (black-and-white, infrared) streams: told from colour ones frame by frame, with hysteresis, and turned
into the classifier's grayscale view."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_or_skip

from maskwatch.camera_color import ColorModeDetector, chroma_spread, is_grayscale, to_gray_faces
from maskwatch.data.corruptions import corrupt


def _colour_scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scene = np.zeros((120, 160, 3), dtype=np.uint8)
    for _ in range(12):  # patches of unrelated hues and brightness, as in a street
        x, y = rng.integers(0, 140), rng.integers(0, 100)
        scene[y : y + 30, x : x + 40] = rng.integers(0, 255, 3)
    return scene


def test_grey_and_cast_frames_are_grey_and_colour_frames_are_not():
    rng = np.random.default_rng(0)
    colour = _colour_scene()
    assert not is_grayscale(colour)
    assert is_grayscale(corrupt(colour, "grayscale", 1, rng))
    assert is_grayscale(corrupt(colour, "infrared", 2, rng))
    assert is_grayscale(corrupt(colour, "infrared", 3, rng))  # magenta cast: still a grey picture
    gray = corrupt(colour, "grayscale", 1, rng).astype(np.float32)
    tinted = np.clip(gray * (1.1, 0.9, 1.15) + (12, -5, 9), 0, 255).astype(np.uint8)  # another cast
    assert chroma_spread(tinted) < 1.0 < chroma_spread(colour)
    assert chroma_spread(np.zeros((10, 10), dtype=np.uint8)) == 0.0
    with pytest.raises(ValueError, match="HxWx3"):
        chroma_spread(np.zeros((4, 4, 4), dtype=np.uint8))


def test_the_stream_switches_only_after_several_frames_in_a_row():
    rng = np.random.default_rng(0)
    colour = _colour_scene()
    night = corrupt(colour, "infrared", 2, rng)
    detector = ColorModeDetector(switch_after=3)
    assert [detector.update(f) for f in (colour, night, night, colour, night)] == [False] * 5  # a blip: no switch
    assert [detector.update(night) for _ in range(3)] == [False, True, True]
    assert [detector.update(f) for f in (colour, colour, night, colour, colour, colour)] == [
        True, True, True, True, True, False]  # fmt: skip


def test_gray_faces_drop_the_cast_and_keep_the_size():
    rng = np.random.default_rng(0)
    faces = [corrupt(_colour_scene(i), "infrared", 3, rng) for i in range(3)]
    gray = to_gray_faces(faces)
    for before, after in zip(faces, gray):
        assert after.shape == before.shape and after.dtype == np.uint8
        assert np.array_equal(after[:, :, 0], after[:, :, 2]) and chroma_spread(after) < 1e-6


@pytest.mark.integration
def test_on_the_shared_scenes_colour_photos_are_rarely_called_grey():
    """The threshold's figures (models/MODEL_CARD.md): most colour scenes stay colour; their infrared and grey
    copies are all grey."""
    from maskwatch.data.images import load_rgb

    folder = shared_or_skip("scenes", "images")
    rng = np.random.default_rng(0)
    paths = sorted(folder.glob("*.jpg"))[::6]
    colour = [np.asarray(load_rgb(p)) for p in paths]
    called = np.mean([is_grayscale(im) for im in colour])
    assert called <= 0.05
    assert all(is_grayscale(corrupt(im, "infrared", level, rng)) for im in colour for level in (1, 2))


# ----------------------------------------------------------------------------------------------------------
# the camera setting in the engine: ``color: auto | color | gray`` (engine.camera_defaults and each camera)


def test_camera_color_modes():
    from maskwatch.camera_color import CameraColor

    rng = np.random.default_rng(0)
    colour, night = _colour_scene(), corrupt(_colour_scene(), "infrared", 2, rng)
    assert [CameraColor("color").observe(f) for f in (colour, night)] == [False, False]
    assert [CameraColor("gray").observe(f) for f in (colour, night)] == [True, True]
    auto = CameraColor("auto", switch_after=2)
    assert [auto.observe(f) for f in (colour, night, night, night, colour, colour)] == [
        False, False, True, True, True, False]  # fmt: skip
    assert auto.mode == "color" and CameraColor("gray").mode == "gray"
    with pytest.raises(ValueError, match=r"auto \| color \| gray"):
        CameraColor("infrared")


def test_the_colour_setting_is_a_camera_setting_with_an_engine_default():
    from maskwatch.stream.config import CameraSettings, EngineConfig

    config = EngineConfig(camera_defaults={"color": "auto"})
    assert config.source("cam.mp4").color == "auto"
    assert config.source("cam.mp4", camera=CameraSettings(color="gray")).color == "gray"
    assert EngineConfig().source("cam.mp4").color == EngineConfig().camera_defaults.color
    with pytest.raises(ValueError, match="color"):
        CameraSettings(color="infrared")


def test_a_grey_crop_batch_gives_the_classifier_grey_faces():
    from fakes import GREEN, fake_detector, scene

    from maskwatch.detection.pipeline import CropBatch

    detector = fake_detector()
    image = scene([(40, 40, 40, GREEN)])
    boxes = np.array([[40.0, 40.0, 80.0, 80.0]])
    batch = CropBatch()
    colour, gray = batch.add(detector, image, boxes), batch.add(detector, image, boxes, gray=True)
    batch.run()
    # the stand-in classifier calls a face masked when it is greener than red: a grey face never is
    assert batch.probabilities(colour)[0, 0] > 0.9 and batch.probabilities(gray)[0, 0] < 0.1


def _night_video(path, colour_frames: int, night_frames: int):
    """A camera that switches to infrared: colour people (green masked, red not), then the same grey picture
    under a green cast (the colour mode left on at night), in which every face looks greener than red."""
    import cv2
    from fakes import walking_frames

    from maskwatch.data.corruptions import to_grayscale

    frames = walking_frames(colour_frames + night_frames, people=2)
    night = [np.clip(to_grayscale(f) * (0.85, 1.15, 0.85) + (0, 8, 0), 0, 255).astype(np.uint8) for f in frames]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for rgb in frames[:colour_frames] + night[colour_frames:]:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _run(video, **camera):
    from fakes import fake_detector

    from maskwatch.core.events import FrameAnalysed, SourceStatus, StatsBucket
    from maskwatch.stream import SourceSpec, StreamEngine

    engine = StreamEngine(fake_detector(), stop_when_done=True, emit_frames=True, stats_interval=0.2)
    events = engine.events()
    engine.add_source(SourceSpec(uri=str(video), name="cam", track=False, **camera))
    engine.start()
    got = list(events)
    assert engine.join(5)
    frames = sorted((e for e in got if isinstance(e, FrameAnalysed)), key=lambda e: e.frame)
    labels = [sorted(f.label for f in e.faces) for e in frames]
    return labels, [e for e in got if isinstance(e, StatsBucket)], [e for e in got if isinstance(e, SourceStatus)]


def test_auto_turns_a_camera_grey_after_it_switches_to_infrared_and_says_so(tmp_path):
    video = _night_video(tmp_path / "night.mp4", colour_frames=8, night_frames=12)
    both, masked, unmasked = ["with_mask", "without_mask"], ["with_mask"] * 2, ["without_mask"] * 2
    labels, buckets, statuses = _run(video, color="auto")
    # colour: each person as they are; the first four cast frames still in colour mode (green: "masked");
    # from the fifth grey frame on the faces go to the classifier grey (the cast removed)
    assert labels == [both] * 8 + [masked] * 4 + [unmasked] * 8
    assert buckets[-1].color_mode == "gray" and statuses[-1].color_mode == "gray"
    labels, buckets, _ = _run(video, color="color")  # the default: the faces as delivered
    assert labels == [both] * 8 + [masked] * 12 and {b.color_mode for b in buckets} == {"color"}
    labels, buckets, statuses = _run(video, color="gray")
    assert labels == [unmasked] * 20 and {b.color_mode for b in buckets} | {s.color_mode for s in statuses} == {"gray"}


def test_serve_agent_and_detect_settings_carry_the_colour_setting(tmp_path):
    """``engine.camera_defaults.color`` reads the same in serve's, the agent's and detect's settings (file and
    environment); an agent's camera may set its own, and a wrong value is refused with the choices."""
    from maskwatch.core.errors import ConfigError
    from maskwatch.fleet.agent import AgentConfig
    from maskwatch.service.settings import ServiceSettings
    from maskwatch.stream.config import DetectSettings

    engine = tmp_path / "engine.yaml"
    engine.write_text("engine:\n  camera_defaults:\n    color: auto\n")
    for cls in (ServiceSettings, AgentConfig, DetectSettings):
        config = cls.load(engine, env={}).engine
        assert config.camera_defaults.color == "auto" and config.source("rtsp://cam/1").color == "auto"
    agent = tmp_path / "agent.yaml"
    agent.write_text("cameras:\n  door: {url: rtsp://cam/1, color: gray}\n  hall: rtsp://cam/2\n")
    config = AgentConfig.load(agent, env={})
    specs = {name: config.engine.source(cam.url, name, cam) for name, cam in config.cameras.items()}
    assert (specs["door"].color, specs["hall"].color) == ("gray", "color")
    env = {"MASKWATCH_DETECT_ENGINE__CAMERA_DEFAULTS__COLOR": "gray"}
    assert DetectSettings.load(env=env).engine.camera_defaults.color == "gray"
    with pytest.raises(ConfigError, match="color"):
        DetectSettings.load(env={"MASKWATCH_DETECT_ENGINE__CAMERA_DEFAULTS__COLOR": "infrared"})
