"""The browser viewer: a viser server whose GUI drives the avatar and whose scene background is the avatar rendered
server-side for each client's camera (FrameRenderer), so the browser shows the pipeline's real output.

Design (after nerfview, gsplat's viewer on viser, written anew): one render thread per client that always renders the
latest state and camera (requests arriving while a frame renders collapse into one, so the picture lags by at most one
frame and never queues up); while the camera moves, and only when a full frame takes longer than `SMOOTH_SECONDS`,
frames render at `moving_fraction` of the resolution, and a full-resolution frame follows once it stops. State that
the GUI edits (expression, head pose, driver frame) lives here, not in the widgets, so `set_expression` and friends
are the same API for a person moving a slider and for a test.
"""
from __future__ import annotations

import io
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import viser

from cgha.errors import UserError

from .camera import ViewCamera, start_view
from .motion import DriverSequence, Reference, turned_pose
from .renderer import FrameRenderer, RenderedFrame, output_shape

log = logging.getLogger(__name__)

RESOLUTIONS = (128, 256, 512, 1024, 2048)  # output height in pixels; the width follows the browser window's aspect
EXPRESSION_RANGE = (-0.5, 1.5)  # coefficients are meant in [0, 1] (0 = neutral); the margin lets one exaggerate
POSE_RANGE_DEG = {"yaw": 60.0, "pitch": 40.0, "roll": 40.0}
SMOOTH_SECONDS = 0.1  # a full frame slower than this renders at `moving_fraction` while the camera moves
MOVING_SECONDS = 0.2  # the camera counts as moving this long after its last update
PLAY_FPS = 25.0  # GHA's subjects and the synthetic ones are 25 FPS sequences


class PortInUse(UserError):
    """The viewer's port is taken (another viewer, another server)."""


@dataclass
class ViewerOptions:
    """host/port: where the server listens (127.0.0.1: this machine only; port 0: any free port); resolution: the
    output height at start; jpeg_quality: of the frames sent; moving_fraction: resolution while moving (see the module
    docstring); screenshot_dir: where the screenshot button saves PNGs; play_fps: driver playback rate."""
    host: str = "127.0.0.1"
    port: int = 8080
    resolution: int = 512
    jpeg_quality: int = 90
    moving_fraction: float = 0.5
    screenshot_dir: Path = Path("results/viewer")
    play_fps: float = PLAY_FPS


@dataclass
class ViewState:
    """What the GUI controls: expression [D]; the head turn in degrees; the driver frame shown and whether it plays."""
    expression: torch.Tensor
    turn: Dict[str, float] = field(default_factory=lambda: {"yaw": 0.0, "pitch": 0.0, "roll": 0.0})
    frame: int = 0
    playing: bool = False


def check_port_free(host: str, port: int) -> None:
    """PortInUse naming the port when nothing can listen on host:port (viser itself would move to the next port
    silently, and the user would open the wrong page)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortInUse(f"port {port} on {host} is in use ({error.strerror}): stop what listens there or choose "
                            f"another with --port") from None


class AvatarViewer:
    """The viewer of one avatar. `names`: one label per expression coefficient (the avatar's basis);
    `reference`: its neutral pose and scale; `driver`: an optional sequence to play."""

    def __init__(self, renderer: FrameRenderer, names: Sequence[str], reference: Reference,
                 driver: Optional[DriverSequence], options: ViewerOptions, device_name: str):
        self.renderer = renderer
        self.names = list(names)
        self.reference = reference
        self.driver = driver
        self.options = options
        self.device_name = device_name
        self.state = ViewState(torch.zeros(len(self.names)))
        self.resolution = options.resolution
        output_shape(self.resolution, 1.0, renderer.upscale)  # a bad --resolution fails before the server starts
        self._lock = threading.Lock()
        self._clients: Dict[int, "_ClientView"] = {}
        self._stop = threading.Event()
        self.server = None
        self.url = ""
        self._gui: Dict[str, object] = {}

    # ------------------------------------------------------------------------------------------- state and frames
    def inputs(self) -> tuple:
        """(expression [D], pose [6], scale [1]) of the current state."""
        with self._lock:
            expression = self.state.expression.clone()
            turn = dict(self.state.turn)
            frame = self.state.frame
        if self.driver is not None:
            pose, scale = self.driver.pose[frame], self.driver.scale[frame]
        else:
            pose, scale = self.reference.pose, torch.tensor([self.reference.scale])
        return expression, turned_pose(pose, turn["yaw"], turn["pitch"], turn["roll"]), scale.reshape(1).float()

    def render(self, camera: ViewCamera, height: int, width: int) -> RenderedFrame:
        expression, pose, scale = self.inputs()
        return self.renderer.render(expression, pose, scale, camera, height, width)

    def set_expression(self, name: str, value: float) -> None:
        """Move the slider of coefficient `name` (as a person would); KeyError listing the names for another one."""
        if name not in self.names:
            raise KeyError(f"no expression coefficient {name!r}; the avatar has: {', '.join(self.names)}")
        handle = self._gui.get(f"exp:{name}")
        if handle is not None:
            handle.value = float(value)  # its callback updates the state and requests frames
        else:
            self._set_coefficient(self.names.index(name), float(value))

    def _set_coefficient(self, index: int, value: float) -> None:
        with self._lock:
            self.state.expression[index] = value
        self.request_all()

    def set_turn(self, yaw: float, pitch: float, roll: float) -> None:
        for key, value in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
            handle = self._gui.get(f"turn:{key}")
            if handle is not None:
                handle.value = float(value)
            else:
                with self._lock:
                    self.state.turn[key] = float(value)
        self.request_all()

    def show_frame(self, index: int) -> None:
        """Show driver frame `index`: its expression goes into the sliders, its head motion into the pose."""
        if self.driver is None:
            raise ValueError("no driver sequence: start the viewer with --driver")
        index = int(index) % len(self.driver)
        with self._lock:
            self.state.frame = index
            self.state.expression = self.driver.expression[index].clone()
        for i, name in enumerate(self.names):
            handle = self._gui.get(f"exp:{name}")
            if handle is not None:
                handle.value = float(self.driver.expression[index, i])
        handle = self._gui.get("frame")
        if handle is not None and handle.value != index:
            handle.value = index
        self.request_all()

    def request_all(self) -> None:
        for view in list(self._clients.values()):
            view.request()

    def latest_frames(self) -> Dict[int, RenderedFrame]:
        """The last frame sent to each connected client, by client id."""
        return {client_id: view.last for client_id, view in list(self._clients.items()) if view.last is not None}

    def frames_sent(self) -> int:
        return sum(view.sent for view in list(self._clients.values()))

    def save_screenshot(self, frame: RenderedFrame) -> Path:
        """Write a frame as a PNG under options.screenshot_dir; returns its path."""
        import imageio.v2 as imageio

        folder = self.options.screenshot_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"viewer_{time.strftime('%Y%m%d_%H%M%S')}_{int(time.time() * 1000) % 1000:03d}.png"
        imageio.imwrite(path, frame.image)
        return path

    # ------------------------------------------------------------------------------------------------- server
    def start(self) -> str:
        """Start serving; returns the URL. PortInUse when the port is taken."""
        check_port_free(self.options.host, self.options.port)
        server = viser.ViserServer(host=self.options.host, port=self.options.port, label="cgha viewer",
                                   verbose=False)
        if self.options.port and server.get_port() != self.options.port:  # taken between the check and the bind
            server.stop()
            raise PortInUse(f"port {self.options.port} on {self.options.host} is in use: choose another with --port")
        self.server = server
        view = start_view(self.reference.pose.tolist(), self.reference.scale)
        server.scene.set_up_direction(tuple(view.up))
        server.initial_camera.position = tuple(view.position)
        server.initial_camera.look_at = tuple(view.look_at)
        server.initial_camera.up = tuple(view.up)
        server.initial_camera.fov = view.fov_y
        self._build_gui(server)
        server.on_client_connect(self._connect)
        server.on_client_disconnect(self._disconnect)
        if self.driver is not None:
            threading.Thread(target=self._play_loop, name="viewer-player", daemon=True).start()
        self.url = f"http://{self.options.host}:{server.get_port()}"
        return self.url

    def stop(self) -> None:
        self._stop.set()
        for view in list(self._clients.values()):
            view.close()
        if self.server is not None:
            self.server.stop()

    def _connect(self, client) -> None:
        view = _ClientView(self, client)
        self._clients[client.client_id] = view
        client.camera.on_update(lambda _: view.moved())
        view.request()

    def _disconnect(self, client) -> None:
        view = self._clients.pop(client.client_id, None)
        if view is not None:
            view.close()

    def _build_gui(self, server) -> None:
        gui = server.gui
        with gui.add_folder("View"):
            choices = [str(r) for r in RESOLUTIONS if r % self.renderer.upscale == 0]
            if str(self.resolution) not in choices:
                choices.append(str(self.resolution))
            resolution = gui.add_dropdown("Resolution (height)", choices, initial_value=str(self.resolution))
            resolution.on_update(lambda _: self._set_resolution(int(resolution.value)))
            self._gui["stats"] = gui.add_text("Frame", initial_value="waiting for a browser", disabled=True)
            gui.add_text("Device", initial_value=self.device_name, disabled=True)
            gui.add_button("Screenshot").on_click(self._screenshot)
            gui.add_button("Reset camera").on_click(self._reset_camera)
        with gui.add_folder("Head pose"):
            for key, limit in POSE_RANGE_DEG.items():
                handle = gui.add_slider(f"{key} (deg)", min=-limit, max=limit, step=1.0, initial_value=0.0)
                handle.on_update(lambda _, key=key, handle=handle: self._set_turn(key, handle.value))
                self._gui[f"turn:{key}"] = handle
        if self.driver is not None:
            with gui.add_folder("Driver"):
                gui.add_text("Sequence", initial_value=str(self.driver.root), disabled=True)
                frame = gui.add_slider("Frame", min=0, max=max(1, len(self.driver) - 1), step=1, initial_value=0)
                frame.on_update(lambda _: self.show_frame(int(frame.value)) if frame.value != self.state.frame
                                else None)
                self._gui["frame"] = frame
                play = gui.add_button("Play / pause")
                play.on_click(lambda _: self.set_playing(not self.state.playing))
                fps = gui.add_number("Playback FPS", initial_value=self.options.play_fps, min=1.0, max=120.0,
                                     step=1.0)
                fps.on_update(lambda _: setattr(self.options, "play_fps", float(fps.value)))
        with gui.add_folder("Expression"):
            gui.add_button("Neutral").on_click(lambda _: [self.set_expression(n, 0.0) for n in self.names])
            for index, name in enumerate(self.names):
                handle = gui.add_slider(name, min=EXPRESSION_RANGE[0], max=EXPRESSION_RANGE[1], step=0.01,
                                        initial_value=0.0)
                handle.on_update(lambda _, index=index, handle=handle: self._set_coefficient(index, handle.value))
                self._gui[f"exp:{name}"] = handle

    def set_playing(self, playing: bool) -> None:
        if self.driver is None:
            raise ValueError("no driver sequence: start the viewer with --driver")
        with self._lock:
            self.state.playing = playing

    def _set_turn(self, key: str, value: float) -> None:
        with self._lock:
            self.state.turn[key] = float(value)
        self.request_all()

    def _set_resolution(self, height: int) -> None:
        self.resolution = height
        self.request_all()

    def _play_loop(self) -> None:
        """Advance the driver frame in real time while playing; frames the renderer cannot keep up with are skipped
        (each client renders the newest state), so playback keeps the sequence's speed on a slow CPU too."""
        start, first = time.perf_counter(), self.state.frame
        while not self._stop.wait(1.0 / max(1.0, self.options.play_fps)):
            if not self.state.playing:
                start, first = time.perf_counter(), self.state.frame
                continue
            target = first + int((time.perf_counter() - start) * self.options.play_fps)
            if target % len(self.driver) != self.state.frame:
                self.show_frame(target)

    def _screenshot(self, event) -> None:
        view = self._clients.get(event.client.client_id) if event.client is not None else None
        if view is None:
            return
        frame = self.render(view.camera(), *view.shape(full=True))
        path = self.save_screenshot(frame)
        buffer = io.BytesIO()
        import imageio.v2 as imageio

        imageio.imwrite(buffer, frame.image, format="png")
        event.client.send_file_download(path.name, buffer.getvalue())
        log.info("screenshot: %s", path)

    def _reset_camera(self, event) -> None:
        if event.client is None:
            return
        view = start_view(self.reference.pose.tolist(), self.reference.scale)
        camera = event.client.camera
        camera.position, camera.look_at, camera.up_direction, camera.fov = (
            tuple(view.position), tuple(view.look_at), tuple(view.up), view.fov_y)

    def _show_stats(self, frame: RenderedFrame, full: bool) -> None:
        handle = self._gui.get("stats")
        if handle is None:
            return
        height, width = frame.image.shape[:2]
        note = "" if full else ", moving"
        handle.value = f"{width}x{height}{note}: {frame.seconds * 1000:.0f} ms ({1.0 / max(frame.seconds, 1e-6):.1f} FPS)"


class _ClientView:
    """One browser client: its camera and its render thread (see the module docstring)."""

    def __init__(self, viewer: AvatarViewer, client):
        self.viewer = viewer
        self.client = client
        self.last: Optional[RenderedFrame] = None
        self.sent = 0
        self._wake = threading.Event()
        self._closed = False
        self._moved_at = 0.0
        self._full_seconds = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"viewer-client-{client.client_id}", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._wake.set()

    def moved(self) -> None:
        self._moved_at = time.perf_counter()
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def camera(self) -> ViewCamera:
        camera = self.client.camera
        return ViewCamera(tuple(float(v) for v in camera.wxyz), tuple(float(v) for v in camera.position),
                          float(camera.fov))

    def shape(self, full: bool) -> tuple:
        """(height, width) of the next frame: the chosen resolution at the window's aspect, or a fraction of it."""
        camera = self.client.camera
        aspect = camera.aspect if camera.aspect and np.isfinite(camera.aspect) else 1.0
        height = self.viewer.resolution
        if not full:
            upscale = self.viewer.renderer.upscale
            height = max(upscale, int(height * self.viewer.options.moving_fraction) // upscale * upscale)
        return output_shape(height, aspect, self.viewer.renderer.upscale)

    def _loop(self) -> None:
        pending_full = False
        while not self._closed:
            # After a reduced frame, wake up by itself to send the full one once the camera has stopped.
            if not self._wake.wait(timeout=MOVING_SECONDS if pending_full else None):
                if not pending_full:
                    continue
            self._wake.clear()
            if self._closed:
                return
            moving = time.perf_counter() - self._moved_at < MOVING_SECONDS
            full = not (moving and self._full_seconds > SMOOTH_SECONDS)
            try:
                frame = self.viewer.render(self.camera(), *self.shape(full))
                self.client.scene.set_background_image(frame.image, format="jpeg",
                                                       jpeg_quality=self.viewer.options.jpeg_quality)
            except Exception:  # a frame that fails must not end the thread: logged, and the next request retries
                log.exception("viewer: rendering a frame failed")
                continue
            if full:
                self._full_seconds = frame.seconds
            pending_full = not full
            self.last = frame
            self.sent += 1
            self.viewer._show_stats(frame, full)
