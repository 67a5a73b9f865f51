// The reference for the PyTorch port of face-api.js's expression model (train/teachers/faceapi.py):
// the package's own JavaScript on TensorFlow.js's pure-JS CPU backend, run by
// train/teachers/verify_faceapi.py. Nothing is downloaded: the models load from the package folder.
//
// usage: node faceapi_reference.cjs REQUEST.json RESULT.json
//   REQUEST: {"node_modules": DIR, "backend": "cpu" | "wasm", "min_confidence": 0.5,
//             "images": [{"id", "rgb": FILE, "width", "height"}],   // full pipeline per image
//             "crops":  [{"id", "rgb": FILE, "width", "height"}]}   // expression net per cut face
//   FILE holds height*width*3 bytes of RGB pixels (row-major), decoded by the caller.
'use strict';

const fs = require('fs');
const path = require('path');

async function main() {
  const [requestFile, resultFile] = process.argv.slice(2);
  if (!requestFile || !resultFile) throw new Error('usage: node faceapi_reference.cjs REQUEST.json RESULT.json');
  const req = JSON.parse(fs.readFileSync(requestFile, 'utf8'));
  const nm = req.node_modules;
  const faceapi = require(path.join(nm, '@vladmandic/face-api/dist/face-api.node-wasm.js'));
  const tf = faceapi.tf;
  const backend = req.backend || 'cpu';  // 'cpu': pure JavaScript; 'wasm': the package's own .wasm files
  if (backend === 'wasm') {
    const wasm = require(path.join(nm, '@tensorflow/tfjs-backend-wasm'));
    wasm.setWasmPaths(path.join(nm, '@tensorflow/tfjs-backend-wasm/dist') + path.sep);
  }
  await tf.setBackend(backend);
  await tf.ready();
  const modelDir = path.join(nm, '@vladmandic/face-api/model');
  await faceapi.nets.faceExpressionNet.loadFromDisk(modelDir);
  const labels = faceapi.FACE_EXPRESSION_LABELS;
  const probs = (e) => labels.map((k) => e[k]);
  const tensorOf = (item) => {
    const buf = fs.readFileSync(item.rgb);
    if (buf.length !== item.width * item.height * 3) throw new Error(`${item.rgb}: ${buf.length} bytes, expected ${item.width}x${item.height}x3`);
    return tf.tensor3d(new Int32Array(buf), [item.height, item.width, 3], 'int32');
  };
  const out = { versions: { faceapi: faceapi.version, tfjs: tf.version_core, backend: tf.getBackend() }, labels, images: [], crops: [] };
  for (const c of req.crops || []) {
    const t = tensorOf(c);
    const e = await faceapi.nets.faceExpressionNet.predictExpressions(t);
    out.crops.push({ id: c.id, expressions: probs(e) });
    t.dispose();
  }
  if ((req.images || []).length) {
    await faceapi.nets.ssdMobilenetv1.loadFromDisk(modelDir);
    await faceapi.nets.faceLandmark68Net.loadFromDisk(modelDir);
    const options = new faceapi.SsdMobilenetv1Options({ minConfidence: req.min_confidence ?? 0.5 });
    const rect = (b) => [b.x, b.y, b.width, b.height];
    for (const im of req.images) {
      const t = tensorOf(im);
      const res = await faceapi.detectAllFaces(t, options).withFaceLandmarks().withFaceExpressions();
      out.images.push({
        id: im.id,
        faces: res.map((r) => ({
          score: r.detection.score,
          box: rect(r.detection.box),
          aligned: rect(r.alignedRect.box),
          landmarks: r.landmarks.positions.map((p) => [p.x, p.y]),
          expressions: probs(r.expressions),
        })),
      });
      t.dispose();
    }
  }
  fs.writeFileSync(resultFile, JSON.stringify(out));
}

main().catch((err) => { console.error(err && err.stack ? err.stack : err); process.exit(1); });
