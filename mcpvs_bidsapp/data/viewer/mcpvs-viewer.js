// The participant report's interactive viewer (mcpvs). Classic script, no modules and no
// fetch(), so that it works from file:// in any browser: niivue (bundled beside this file)
// and each T1w's volumes (a <script> that sets window.MCPVS_VIEWER_DATA[prefix], base64
// NIfTI) are loaded by adding <script> tags, which browsers allow from file:// pages.
(function () {
  "use strict";
  var libLoaded = null;
  var dataLoaded = {};

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var tag = document.createElement("script");
      tag.src = src;
      tag.onload = resolve;
      tag.onerror = function () { reject(new Error("cannot load " + src)); };
      document.head.appendChild(tag);
    });
  }

  function lib(src) {
    if (!libLoaded) { libLoaded = loadScript(src); }
    return libLoaded;
  }

  // colours of the regions as the figures draw them (amber BG, blue WM)
  var REGION_LUT = {
    R: [0, 255, 31, 0], G: [0, 176, 155, 0], B: [0, 0, 255, 0], A: [0, 200, 200, 0],
    labels: ["background", "BG", "WM", "other"],
  };
  var LAYOUTS = { multiplanar: 3, axial: 0, coronal: 1, sagittal: 2 };

  async function open(box) {
    if (box.dataset.state) { return; }
    box.dataset.state = "loading";
    var status = box.querySelector(".viewer-status");
    var prefix = box.dataset.prefix;
    try {
      await lib(box.dataset.lib);
      if (!dataLoaded[prefix]) { dataLoaded[prefix] = loadScript(box.dataset.src); }
      await dataLoaded[prefix];
      var data = (window.MCPVS_VIEWER_DATA || {})[prefix];
      if (!data) { throw new Error("no viewer data for " + prefix); }
      var nv = new window.niivue.Niivue({
        backColor: [0, 0, 0, 1],
        crosshairColor: [1, 0.85, 0, 0.9],
        crosshairWidth: 1,
        isColorbar: false,
        show3Dcrosshair: true,
        isRadiologicalConvention: false,
        textHeight: 0.04,
        loadingText: "loading…",
      });
      await nv.attachToCanvas(box.querySelector("canvas"));
      nv.setInterpolation(true);
      var volumes = {};
      for (var i = 0; i < data.volumes.length; i++) {
        var v = data.volumes[i];
        var image = await window.niivue.NVImage.loadFromBase64({
          base64: v.b64, name: v.name, colormap: v.colormap || "gray",
          opacity: v.visible ? (v.opacity || 1) : 0,
          cal_min: v.cal_min, cal_max: v.cal_max,
        });
        if (v.key === "regions") { image.setColormapLabel(REGION_LUT); }
        nv.addVolume(image);
        volumes[v.key] = { image: image, index: nv.volumes.length - 1, opacity: v.opacity || 1 };
      }
      nv.setAtlasOutline(0);
      nv.setSliceType(nv.sliceTypeMultiplanar);
      var where = box.querySelector(".viewer-location");
      nv.onLocationChange = function (loc) { if (where) { where.textContent = loc.string || ""; } };
      box.querySelectorAll("input[data-volume]").forEach(function (input) {
        input.addEventListener("change", function () {
          var vol = volumes[input.dataset.volume];
          if (!vol) { return; }
          nv.setOpacity(vol.index, input.checked ? vol.opacity : 0);
        });
      });
      box.querySelectorAll("input[data-crosshair]").forEach(function (input) {
        input.addEventListener("change", function () { nv.setCrosshairWidth(input.checked ? 1 : 0); });
      });
      box.querySelectorAll("button[data-layout]").forEach(function (button) {
        button.addEventListener("click", function () { nv.setSliceType(LAYOUTS[button.dataset.layout]); });
      });
      box.querySelectorAll("button[data-goto]").forEach(function (button) {
        var mm = (data.focus || {})[button.dataset.goto];
        if (!mm) { button.disabled = true; return; }
        button.addEventListener("click", function () {
          nv.scene.crosshairPos = nv.mm2frac(mm);
          nv.drawScene();
          nv.createOnLocationChange();
        });
      });
      if (data.focus && data.focus.BG) {
        nv.scene.crosshairPos = nv.mm2frac(data.focus.BG);
        nv.drawScene();
      }
      box.dataset.state = "ready";
      if (status) { status.textContent = ""; }
      box.mcpvsViewer = nv;
    } catch (err) {
      box.dataset.state = "failed";
      if (status) { status.textContent = "The viewer could not start: " + err.message; }
      console.warn("mcpvs viewer: " + err.message);
    }
  }

  function start() {
    var boxes = document.querySelectorAll(".mcpvs-viewer");
    if (!("IntersectionObserver" in window)) { boxes.forEach(open); return; }
    var seen = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { seen.unobserve(entry.target); open(entry.target); }
      });
    }, { rootMargin: "300px" });
    boxes.forEach(function (box) {
      seen.observe(box);
      var button = box.querySelector("button[data-open]");
      if (button) { button.addEventListener("click", function () { open(box); }); }
    });
  }

  window.mcpvsViewer = { open: open };
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); }
  else { start(); }
})();
