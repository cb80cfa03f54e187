// The course's model in the browser: LiteRT.js runs the exported .tflite file on this device.
// page.json (written by lesionlib.page next to this file) says which file, its input size,
// the classes and how to read its output. Nothing is sent anywhere: the image is decoded,
// resized and classified in this page (and page.html's Content-Security-Policy forbids
// requests to any other host).
import {loadAndCompile, loadLiteRt, Tensor} from './litert/index.js';

const $ = (id) => document.getElementById(id);
const show = (id, visible) => { $(id).hidden = !visible; };

function say(text, isError = false) {
  $('message').textContent = text;
  $('message').classList.toggle('error', isError);
  show('message', Boolean(text));
}

// The picture resized to the model's input, [height, width]: first cut to the input's shape
// around its centre (so it is not squeezed), then scaled. This is all the preparation an app
// does; the centre square, the downscaling and the scaling live inside the model.
function fit(bitmap, height, width) {
  const canvas = $('seen');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d', {willReadFrequently: true});
  const scale = Math.min(bitmap.width / width, bitmap.height / height);
  const [w, h] = [width * scale, height * scale];
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = 'high';
  context.drawImage(bitmap, (bitmap.width - w) / 2, (bitmap.height - h) / 2, w, h, 0, 0, width, height);
  const rgba = context.getImageData(0, 0, width, height).data;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return rgb;
}

function frameCentreSquare(height, width) {
  const context = $('seen').getContext('2d');
  const side = Math.min(height, width);
  context.strokeStyle = 'rgba(255, 255, 255, 0.9)';
  context.setLineDash([4, 3]);
  context.lineWidth = 1;
  context.strokeRect((width - side) / 2 + 0.5, (height - side) / 2 + 0.5, side - 1, side - 1);
}

function showProbabilities(classes, probabilities) {
  const body = $('probabilities').tBodies[0];
  body.replaceChildren();
  const top = probabilities.indexOf(Math.max(...probabilities));
  classes.forEach((name, i) => {
    const row = body.insertRow();
    row.dataset.label = name;
    row.dataset.probability = String(probabilities[i]);
    if (i === top) row.classList.add('top');
    row.insertCell().textContent = name;
    const bar = document.createElement('div');
    bar.className = 'bar' + (name === 'malignant' ? ' malignant' : '');
    bar.style.width = `${Math.round(probabilities[i] * 100)}%`;
    row.insertCell().append(bar);
    row.insertCell().textContent = probabilities[i].toFixed(3);
  });
}

// How many files the page has answered (shown or refused): tests wait on it.
function finished() {
  document.body.dataset.answered = String(Number(document.body.dataset.answered || 0) + 1);
}

async function main() {
  const config = await (await fetch('page.json')).json();
  document.title = `lesion-course: the model in your browser (${config.disclaimer})`;
  $('disclaimer').textContent = config.disclaimer;
  $('result-disclaimer').textContent = `${config.disclaimer} A teaching model, trained on one collection of dermoscopic images.`;
  const [height, width] = config.input;
  $('about').textContent = `Model: ${config.model} (${config.variant}, ${(config.bytes / 1e6).toFixed(1)} MB), ` +
    `input ${width}×${height} RGB; classes ${config.classes.join(', ')}. Runs with LiteRT.js ${config.litert} on this device's CPU.`;
  await loadLiteRt('./litert/wasm/');
  const model = await loadAndCompile(config.model, {accelerator: 'wasm'});
  $('status').textContent = 'Model loaded. Choose a dermoscopic image: it is classified on this device and never uploaded.';
  $('file').disabled = false;
  document.body.dataset.ready = 'true';

  async function classify(file) {
    say('');
    show('result', false);
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, {imageOrientation: 'from-image'});
    } catch {
      say(`“${file.name}” is not an image this page can read. Choose a JPEG, PNG, GIF, WebP or BMP image.`, true);
      finished();
      return;
    }
    const pixels = fit(bitmap, height, width);
    bitmap.close();
    const started = performance.now();
    const input = new Tensor(pixels, [1, height, width, 3]);
    const outputs = await model.run(input);
    input.delete();
    const output = await outputs[0].moveTo('wasm');
    const raw = Array.from(output.toTypedArray());
    output.delete();
    const milliseconds = performance.now() - started;
    const [scale, zero] = config.output_quantization || [1, 0];
    const probabilities = raw.map((q) => (q - zero) * scale);
    frameCentreSquare(height, width);
    showProbabilities(config.classes, probabilities);
    $('timing').textContent = `The model ran in ${milliseconds.toFixed(0)} ms on this device.`;
    $('seen-caption').textContent = `${file.name} as the model gets it (${width}×${height}); the frame marks the centre square it looks at.`;
    show('result', true);
    finished();
  }

  $('file').addEventListener('change', () => { if ($('file').files[0]) classify($('file').files[0]); });
  const drop = $('drop');
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    if (event.dataTransfer.files[0]) classify(event.dataTransfer.files[0]);
  });
}

main().catch((error) => {
  $('status').textContent = `The model could not be loaded: ${error.message || error}. ` +
    'Serve this folder with `lesionlib serve` and open the address it prints.';
  $('status').classList.add('error');
  document.body.dataset.failed = 'true';
});
