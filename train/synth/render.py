"""Headless OpenGL rasteriser (moderngl on an EGL context; Mesa llvmpipe on CPU-only machines).

Why OpenGL instead of a numpy rasteriser: perspective-correct texturing, depth testing, MSAA and
per-pixel lighting of a 50k-triangle head at a few milliseconds per image, even on llvmpipe.
System packages needed: ``libegl1 libgl1-mesa-dri libegl-mesa0`` (Debian); Python: ``moderngl``.

Coordinates: the camera sits at the origin looking down -z, y up (OpenGL convention; ICT is y up,
z towards the viewer, so a head placed at z = -distance faces the camera). Image pixel coordinates
put pixel centres on integers (OpenCV convention), which is what the aligner warps with.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from train.synth.ict import MAT_GUMS, MAT_MOUTH, MAT_SKIN, MAT_TEETH, FaceModel

_VERT = """
#version 330
uniform mat4 proj;
in vec3 in_pos;
in vec3 in_normal;
in vec2 in_uv;
in float in_mat;
in float in_aux;
in float in_occ;
out vec3 v_pos;
out vec3 v_normal;
out vec2 v_uv;
flat out int v_mat;
out float v_aux;
out float v_occ;
void main() {
    v_pos = in_pos;
    v_normal = in_normal;
    v_uv = in_uv;
    v_mat = int(in_mat + 0.5);
    v_aux = in_aux;
    v_occ = in_occ;
    gl_Position = proj * vec4(in_pos, 1.0);
}
"""

_FRAG = """
#version 330
uniform sampler2D skin;
uniform vec3 skin_gain;
uniform vec3 ambient;
uniform vec3 light_dir[2];
uniform vec3 light_col[2];
uniform float spec_strength;
uniform float shininess;
uniform vec3 iris_col;
in vec3 v_pos;
in vec3 v_normal;
in vec2 v_uv;
flat in int v_mat;
in float v_aux;
in float v_occ;
out vec4 f_color;

vec3 to_linear(vec3 c) { return pow(c, vec3(2.2)); }

void main() {
    vec3 base;
    float spec = spec_strength;
    float shine = shininess;
    if (v_mat == 0) {
        base = to_linear(texture(skin, vec2(v_uv.x * 0.5, v_uv.y)).rgb) * skin_gain;
    } else if (v_mat == 1) {
        base = vec3(0.16, 0.025, 0.025); spec = 0.05;
    } else if (v_mat == 2) {
        base = vec3(0.42, 0.09, 0.09); spec = 0.25; shine = 40.0;
    } else if (v_mat == 3) {
        base = vec3(0.74, 0.70, 0.60); spec = 0.3; shine = 60.0;
    } else if (v_mat == 4) {
        if (v_aux < 1.0) discard;
        base = vec3(0.72, 0.64, 0.60); spec = 0.5; shine = 80.0;
    } else if (v_mat == 5) {
        float r = v_aux;
        float ang = atan(v_uv.y - 0.5, v_uv.x - 0.5);
        float streak = 0.8 + 0.2 * sin(ang * 37.0) * sin(ang * 11.0 + r * 9.0);
        vec3 ic = iris_col * streak;
        if (r > 0.82) ic *= mix(1.0, 0.35, (r - 0.82) / 0.18);
        base = (r < 0.36) ? vec3(0.01) : ic;
        if (r > 1.0) base = vec3(0.72, 0.64, 0.60);
        spec = 0.9; shine = 120.0;
    } else {
        base = vec3(0.12, 0.04, 0.035); spec = 0.05;
    }
    vec3 n = normalize(v_normal);
    if (!gl_FrontFacing) n = -n;
    vec3 V = normalize(-v_pos);
    vec3 col = ambient * base;
    for (int i = 0; i < 2; ++i) {
        vec3 L = normalize(light_dir[i]);
        float d = max(dot(n, L), 0.0);
        vec3 H = normalize(L + V);
        float s = (d > 0.0) ? spec * pow(max(dot(n, H), 0.0), shine) : 0.0;
        col += light_col[i] * (base * d + vec3(s));
    }
    col *= v_occ;
    f_color = vec4(pow(clamp(col, 0.0, 1.0), vec3(1.0 / 2.2)), 1.0);
}
"""


@dataclass
class Lighting:
    """Ambient plus two directional lights (directions in camera space, pointing to the light)."""

    ambient: tuple[float, float, float] = (0.35, 0.35, 0.35)
    directions: tuple[tuple[float, float, float], ...] = ((0.3, 0.4, 1.0), (-0.6, 0.1, 0.6))
    colors: tuple[tuple[float, float, float], ...] = ((0.75, 0.75, 0.75), (0.15, 0.15, 0.15))
    specular: float = 0.12
    shininess: float = 24.0


@dataclass
class Camera:
    """Pinhole camera: focal length in pixels, image size, principal point at the centre."""

    focal: float
    width: int
    height: int
    near: float = 1.0
    far: float = 1000.0

    def projection(self) -> np.ndarray:
        f, w, h, n, fa = self.focal, self.width, self.height, self.near, self.far
        return np.array([
            [2 * f / w, 0, 0, 0],
            [0, 2 * f / h, 0, 0],
            [0, 0, -(fa + n) / (fa - n), -2 * fa * n / (fa - n)],
            [0, 0, -1, 0],
        ], np.float32)

    def project(self, pts: np.ndarray) -> np.ndarray:
        """Camera-space points (N, 3) to pixel coordinates (N, 2), pixel centres on integers."""
        z = -pts[:, 2:3]
        if np.any(z <= 0):
            raise ValueError("points behind the camera: every z must be negative")
        xy = pts[:, :2] / z * self.focal
        return np.stack([self.width / 2 + xy[:, 0] - 0.5, self.height / 2 - xy[:, 1] - 0.5],
                        axis=1).astype(np.float32)


@dataclass
class Material:
    """Per-render appearance knobs that are not in the texture."""

    skin_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    iris: tuple[float, float, float] = (0.25, 0.15, 0.08)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head rotation ``Rz @ Ry @ Rx`` from degrees: yaw about y (positive turns the face towards
    image-right, the subject's left), pitch about x (positive: the face looks down), roll about z
    (positive: counter-clockwise as seen in the image)."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


@dataclass
class _GpuTexture:
    tex: object
    shape: tuple[int, ...] = field(default=())


class Renderer:
    """One GL context, one program, one framebuffer size. Not thread-safe: one per process.

    Textures are kept on the GPU in a bounded LRU (``max_textures``; the least recently used is
    released when full) so a worker cycling through all identities does not re-upload each time.
    """

    def __init__(self, model: FaceModel, width: int = 256, height: int = 256, samples: int = 4,
                 max_textures: int = 64) -> None:
        try:
            import moderngl
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise RuntimeError(
                "the synthetic renderer needs moderngl (pip install moderngl) and an EGL driver "
                "(apt-get install libegl1 libgl1-mesa-dri libegl-mesa0)") from e
        self._mgl = moderngl
        try:
            # (moderngl's stub types **settings as dicts; backend= is a string)
            self.ctx = moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 - glcontext raises plain Exception
            raise RuntimeError(
                f"could not create a headless EGL OpenGL context ({e}); install libegl1 "
                "libgl1-mesa-dri libegl-mesa0") from e
        self.model = model
        self.width, self.height = int(width), int(height)
        self.max_textures = int(max_textures)
        self.prog = self.ctx.program(vertex_shader=_VERT, fragment_shader=_FRAG)
        topo = model.topology
        self._corner_vertex = topo.vertex_of_corner
        n = len(topo.vertex_of_corner)
        static = np.zeros((n, 4), np.float32)
        static[:, 0:2] = topo.uv
        static[:, 2] = topo.material
        static[:, 3] = model.eye_params
        self._static = self.ctx.buffer(static.tobytes())
        self._dynamic = self.ctx.buffer(reserve=n * 7 * 4, dynamic=True)
        # Skin is a closed, consistently wound (CCW outward) surface: drawn with back-face culling,
        # which halves llvmpipe's raster work. The mouth and eye interiors are not, so they are a
        # second draw without culling.
        tri = topo.triangles.astype(np.uint32)
        skin = topo.material[tri[:, 0]] == MAT_SKIN
        self._vaos = []
        for sel, cull in ((skin, True), (~skin, False)):
            ibo = self.ctx.buffer(np.ascontiguousarray(tri[sel]).tobytes())
            vao = self.ctx.vertex_array(
                self.prog,
                [(self._dynamic, "3f 3f 1f", "in_pos", "in_normal", "in_occ"),
                 (self._static, "2f 1f 1f", "in_uv", "in_mat", "in_aux")],
                index_buffer=ibo, index_element_size=4)
            self._vaos.append((vao, ibo, cull))
        self._occ_base = self._interior_occlusion()
        self._n_corners = n
        self._textures: OrderedDict[str, _GpuTexture] = OrderedDict()
        self._samples = int(samples)
        self._make_fbos()

    def _make_fbos(self) -> None:
        size = (self.width, self.height)
        ctx = self.ctx
        samples = self._samples if self._samples > 1 else 0
        self._ms_fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(size, 4, samples=samples)],
            depth_attachment=ctx.depth_renderbuffer(size, samples=samples))
        self._fbo = (ctx.framebuffer(color_attachments=[ctx.renderbuffer(size, 4)])
                     if samples else self._ms_fbo)

    def _interior_occlusion(self) -> np.ndarray:
        """Crude ambient occlusion for the mouth interior (no shadows in a forward renderer).

        Interior vertices darken with depth behind the lips, so an opening mouth shows a dark
        cavity with lit front teeth rather than an evenly lit tongue.
        """
        m = self.model
        topo = m.topology
        occ = np.ones(len(topo.vertex_of_corner), np.float32)
        z = m.neutral[topo.vertex_of_corner, 2]
        lip_z = float(m.neutral[m.landmarks68[62], 2])
        interior = np.isin(topo.material, (MAT_MOUTH, MAT_GUMS, MAT_TEETH))
        depth = np.clip((lip_z - z[interior]) / 5.0, 0.0, 1.0)
        occ[interior] = 1.0 - 0.85 * depth ** 0.7
        return occ

    # ------------------------------------------------------------------------------ textures
    def has_texture(self, key: str) -> bool:
        return key in self._textures

    def set_texture(self, key: str, rgb: np.ndarray) -> None:
        """Upload a skin texture: (H, 2H, 3) uint8, u in [0, 1) face tile, [1, 2) back tile."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"texture must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if key in self._textures:
            self._textures.move_to_end(key)
            return
        with self.ctx:  # make this context current: a process may hold several
            self._upload(key, rgb)

    def _upload(self, key: str, rgb: np.ndarray) -> None:
        while len(self._textures) >= self.max_textures:
            _, old = self._textures.popitem(last=False)
            old.tex.release()  # type: ignore[attr-defined]
        # GL rows go bottom-up and v=0 is the bottom of ICT's UV square.
        data = np.ascontiguousarray(rgb[::-1])
        tex = self.ctx.texture((rgb.shape[1], rgb.shape[0]), 3, data.tobytes())
        tex.build_mipmaps()
        tex.filter = (self._mgl.LINEAR_MIPMAP_LINEAR, self._mgl.LINEAR)
        tex.repeat_x = False
        tex.repeat_y = False
        self._textures[key] = _GpuTexture(tex=tex, shape=rgb.shape)

    # ------------------------------------------------------------------------------ drawing
    def render(self, verts_cam: np.ndarray, normals_cam: np.ndarray, texture: str, camera: Camera,
               lighting: Lighting, material: Material | None = None) -> np.ndarray:
        """Draw one posed head; returns (H, W, 4) uint8 RGBA, alpha = coverage."""
        if (camera.width, camera.height) != (self.width, self.height):
            raise ValueError(
                f"camera size must equal renderer size {(self.width, self.height)}, "
                f"got {(camera.width, camera.height)}")
        if texture not in self._textures:
            raise KeyError(f"texture {texture!r} not uploaded; call set_texture first")
        with self.ctx:  # make this context current: a process may hold several
            return self._draw(verts_cam, normals_cam, texture, camera, lighting,
                              material or Material())

    def _draw(self, verts_cam: np.ndarray, normals_cam: np.ndarray, texture: str, camera: Camera,
              lighting: Lighting, material: Material) -> np.ndarray:
        ci = self._corner_vertex
        dyn = np.empty((self._n_corners, 7), np.float32)
        dyn[:, 0:3] = verts_cam[ci]
        dyn[:, 3:6] = normals_cam[ci]
        dyn[:, 6] = self._occ_base
        self._dynamic.write(dyn.tobytes())
        p = self.prog
        p["proj"].write(camera.projection().T.copy().tobytes())
        p["ambient"].value = tuple(lighting.ambient)
        dirs = list(lighting.directions)[:2] + [(0.0, 0.0, 1.0)] * (2 - len(lighting.directions))
        cols = list(lighting.colors)[:2] + [(0.0, 0.0, 0.0)] * (2 - len(lighting.colors))
        p["light_dir"].write(np.asarray(dirs, np.float32).tobytes())
        p["light_col"].write(np.asarray(cols, np.float32).tobytes())
        p["spec_strength"].value = float(lighting.specular)
        p["shininess"].value = float(lighting.shininess)
        p["skin_gain"].value = tuple(material.skin_gain)
        p["iris_col"].value = tuple(material.iris)
        p["skin"].value = 0
        self._textures[texture].tex.use(0)  # type: ignore[attr-defined]
        self._textures.move_to_end(texture)
        ctx = self.ctx
        self._ms_fbo.use()
        ctx.enable(self._mgl.DEPTH_TEST)
        self._ms_fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        ctx.front_face = "ccw"
        for vao, _, cull in self._vaos:
            if cull:
                ctx.enable(self._mgl.CULL_FACE)
            else:
                ctx.disable(self._mgl.CULL_FACE)
            vao.render(self._mgl.TRIANGLES)
        ctx.disable(self._mgl.CULL_FACE)
        if self._samples > 1:
            ctx.copy_framebuffer(self._fbo, self._ms_fbo)
            raw = self._fbo.read(components=4, alignment=1)
        else:
            raw = self._ms_fbo.read(components=4, alignment=1)
        img = np.frombuffer(raw, np.uint8).reshape(self.height, self.width, 4)
        return np.ascontiguousarray(img[::-1])

    def release(self) -> None:
        with self.ctx:
            for t in self._textures.values():
                t.tex.release()  # type: ignore[attr-defined]
        self._textures.clear()
        self.ctx.release()
