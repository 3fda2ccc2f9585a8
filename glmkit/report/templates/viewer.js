/* glmkit kernel-free viewer: decodes the maps embedded in the page and draws slices.
   No network, no dependencies. One call of window.glmkitViewer(root) per fragment. */
(function () {
  "use strict";
  if (window.glmkitViewer) return;

  function b64bytes(s) {
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function inflate(s) {
    if (typeof DecompressionStream === "undefined") {
      return Promise.reject(new Error("this browser lacks DecompressionStream; open the report in a current browser"));
    }
    var stream = new Blob([b64bytes(s)]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }
  function fmt(v) {
    if (v === Infinity) return "\u221e";
    if (!isFinite(v)) return String(v);
    var a = Math.abs(v);
    return (a !== 0 && (a < 0.001 || a >= 1e5)) ? v.toExponential(3) : String(+v.toFixed(4));
  }

  window.glmkitViewer = function (root) {
    if (!root || root.dataset.ready) return;
    var D = JSON.parse(root.querySelector('script[data-role="viewer-data"]').textContent);
    var q = function (sel) { return root.querySelector(sel); };
    var qa = function (sel) { return Array.prototype.slice.call(root.querySelectorAll(sel)); };
    var nx = D.shape[0], ny = D.shape[1], nz = D.shape[2], nvox = nx * ny * nz;
    var A = D.affine, vs = [Math.abs(A[0][0]), Math.abs(A[1][1]), Math.abs(A[2][2])];
    var S = {map: 0, t: 0, method: "value", alpha: "0.05", extent: 0, cut: [0, 0, 0], mode: "ortho",
             count: 0, clusters: [], note: ""};
    var maskIdx, inMask, bg = null, vols = [], lab = new Int32Array(nvox), kept = new Uint8Array(1);
    var allMethods = {};
    D.maps.forEach(function (m) { Object.keys(m.methods).forEach(function (k) { allMethods[k] = 1; }); });

    function idx(i, j, k) { return (i * ny + j) * nz + k; }
    function mm(ax, i) { return A[ax][ax] * i + A[ax][3]; }
    function vox(ax, x) { return Math.max(0, Math.min(D.shape[ax] - 1, Math.round((x - A[ax][3]) / A[ax][ax]))); }

    function decodeMap(m) {
      return inflate(m.data).then(function (b) {
        var n = maskIdx.length, vol = new Float32Array(nvox), code = 0;
        vol.fill(NaN);
        for (var p = 0; p < n; p++) {
          code = (code + ((b[p] << 8) | b[n + p])) & 0xFFFF;
          vol[maskIdx[p]] = (code === m.zero_code) ? 0 : m.offset + code * m.scale;
        }
        return vol;
      });
    }

    // ------------------------------------------------------------ thresholding
    var NB = (function () {
      var out = [], c = D.connectivity;
      for (var di = -1; di <= 1; di++) for (var dj = -1; dj <= 1; dj++) for (var dk = -1; dk <= 1; dk++) {
        var s = Math.abs(di) + Math.abs(dj) + Math.abs(dk);
        if (s === 0) continue;
        if ((c === 6 && s === 1) || (c === 18 && s <= 2) || c === 26) out.push([di, dj, dk]);
      }
      return out;
    })();

    var STACK = new Int32Array(nvox);  // flood-fill stack, allocated once
    function compute() {
      var m = D.maps[S.map], vol = vols[S.map], t = S.t, two = m.two_sided, n = maskIdx.length;
      lab.fill(0);
      for (var p = 0; p < n; p++) {
        var f = maskIdx[p], v = vol[f];
        if (v !== 0 && v === v && (two ? Math.abs(v) >= t : v >= t)) lab[f] = v > 0 ? -1 : -2;
      }
      var clusters = [], stack = STACK, id = 0;
      for (p = 0; p < n; p++) {
        var start = maskIdx[p];
        if (lab[start] >= 0) continue;
        var mark = lab[start], top = 0, size = 0, peak = 0, pk = start;
        id += 1; lab[start] = id; stack[top++] = start;
        while (top > 0) {
          var cur = stack[--top], ci = (cur / (ny * nz)) | 0, cj = ((cur / nz) | 0) % ny, ck = cur % nz;
          size += 1;
          var av = Math.abs(vol[cur]);
          if (av > peak) { peak = av; pk = cur; }
          for (var e = 0; e < NB.length; e++) {
            var ii = ci + NB[e][0], jj = cj + NB[e][1], kk = ck + NB[e][2];
            if (ii < 0 || jj < 0 || kk < 0 || ii >= nx || jj >= ny || kk >= nz) continue;
            var nb = idx(ii, jj, kk);
            if (lab[nb] === mark) { lab[nb] = id; stack[top++] = nb; }
          }
        }
        clusters.push({id: id, size: size, peak: vol[pk], i: (pk / (ny * nz)) | 0, j: ((pk / nz) | 0) % ny, k: pk % nz});
      }
      kept = new Uint8Array(id + 1);
      var count = 0, survivors = [];
      clusters.forEach(function (c) {
        if (c.size >= S.extent) { kept[c.id] = 1; count += c.size; survivors.push(c); }
      });
      survivors.sort(function (a, b) { return b.size - a.size || Math.abs(b.peak) - Math.abs(a.peak); });
      S.count = count; S.clusters = survivors;
    }

    // ------------------------------------------------------------ drawing
    function colour(v, m) {
      var top = m.two_sided ? m.max_abs : m.vmax, a = Math.abs(v);
      var f = top > S.t ? (a - S.t) / (top - S.t) : 1;
      f = Math.max(0, Math.min(1, f));
      var g = Math.round(40 + 215 * f);
      return v > 0 ? [255, g, 0] : [0, g, 255];
    }
    function pixel(data, o, f, m, vol) {
      var g = 0;
      if (bg) g = bg[f]; else if (inMask[f]) g = 70;
      var l = lab[f];
      if (l > 0 && kept[l]) {
        var c = colour(vol[f], m);
        data[o] = c[0]; data[o + 1] = c[1]; data[o + 2] = c[2];
      } else { data[o] = g; data[o + 1] = g; data[o + 2] = g; }
      data[o + 3] = 255;
    }
    // view geometry: u (columns) and v (rows, top first) for a slice perpendicular to axis ax
    function geom(ax) {
      if (ax === 0) return {w: ny, h: nz, su: vs[1], sv: vs[2], at: function (u, v, c) { return [c, u, nz - 1 - v]; }};
      if (ax === 1) return {w: nx, h: nz, su: vs[0], sv: vs[2], at: function (u, v, c) { return [u, c, nz - 1 - v]; }};
      return {w: nx, h: ny, su: vs[0], sv: vs[1], at: function (u, v, c) { return [u, ny - 1 - v, c]; }};
    }
    function fillSlice(img, W, ox, oy, ax, c) {
      var G = geom(ax), m = D.maps[S.map], vol = vols[S.map];
      for (var v = 0; v < G.h; v++) for (var u = 0; u < G.w; u++) {
        var ijk = G.at(u, v, c);
        pixel(img.data, ((oy + v) * W + ox + u) * 4, idx(ijk[0], ijk[1], ijk[2]), m, vol);
      }
    }
    var off = document.createElement("canvas");
    function blit(canvas, img, w, h, pxu, pxv) {
      off.width = w; off.height = h;
      off.getContext("2d").putImageData(img, 0, 0);
      canvas.width = Math.round(w * pxu); canvas.height = Math.round(h * pxv);
      var ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
      return ctx;
    }
    function mosaicSlices() {
      var lo = nz, hi = -1;
      for (var p = 0; p < maskIdx.length; p++) { var k = maskIdx[p] % nz; if (k < lo) lo = k; if (k > hi) hi = k; }
      var n = Math.min(12, hi - lo + 1), out = [];
      for (var s = 0; s < n; s++) out.push(Math.round(lo + (s + 1) * (hi - lo) / (n + 1)));
      return out;
    }
    var mosaicK = null, COLS = 6;
    function draw() {
      var scale = S.mode === "ortho" ? 1.6 : (S.mode === "mosaic" ? 0.9 : 3.2);
      qa("canvas[data-view]").forEach(function (cv) {
        var view = cv.dataset.view;
        var show = S.mode === "ortho" ? view !== "mosaic" : view === S.mode;
        cv.hidden = !show;
        if (!show) return;
        if (view === "mosaic") {
          mosaicK = mosaicK || mosaicSlices();
          var rows = Math.ceil(mosaicK.length / COLS), W = nx * COLS, H = ny * rows;
          var img = new ImageData(W, H);
          mosaicK.forEach(function (k, s) { fillSlice(img, W, (s % COLS) * nx, ((s / COLS) | 0) * ny, 2, k); });
          var ctx = blit(cv, img, W, H, vs[0] * scale, vs[1] * scale);
          ctx.fillStyle = "#fff"; ctx.font = "11px sans-serif";
          mosaicK.forEach(function (k, s) {
            ctx.fillText("z=" + fmt(mm(2, k)), (s % COLS) * nx * vs[0] * scale + 3, ((s / COLS) | 0) * ny * vs[1] * scale + 12);
          });
          return;
        }
        var ax = {x: 0, y: 1, z: 2}[view], G = geom(ax), im = new ImageData(G.w, G.h);
        fillSlice(im, G.w, 0, 0, ax, S.cut[ax]);
        var c2 = blit(cv, im, G.w, G.h, G.su * scale, G.sv * scale);
        // crosshair through the cut
        var other = [0, 1, 2].filter(function (a) { return a !== ax; });
        var cu = S.cut[other[0]], cvv = S.cut[other[1]];
        var px = (cu + 0.5) * G.su * scale, py = (G.h - 1 - cvv + 0.5) * G.sv * scale;
        if (ax === 2) py = (ny - 1 - S.cut[1] + 0.5) * G.sv * scale;
        c2.strokeStyle = "rgba(80,220,80,0.8)"; c2.lineWidth = 1;
        c2.beginPath(); c2.moveTo(px, 0); c2.lineTo(px, cv.height); c2.moveTo(0, py); c2.lineTo(cv.width, py); c2.stroke();
        c2.fillStyle = "#fff"; c2.font = "11px sans-serif";
        c2.fillText("xyz"[ax] + "=" + fmt(mm(ax, S.cut[ax])), 3, 12);
      });
    }
    function where(cv, ev) {
      var r = cv.getBoundingClientRect(), view = cv.dataset.view;
      var fx = (ev.clientX - r.left) / r.width, fy = (ev.clientY - r.top) / r.height;
      if (view === "mosaic") {
        var rows = Math.ceil(mosaicK.length / COLS), X = fx * nx * COLS, Y = fy * ny * rows;
        var s = ((Y / ny) | 0) * COLS + ((X / nx) | 0);
        if (s >= mosaicK.length) return null;
        return [Math.floor(X % nx), ny - 1 - Math.floor(Y % ny), mosaicK[s]];
      }
      var ax = {x: 0, y: 1, z: 2}[view], G = geom(ax);
      var u = Math.min(G.w - 1, Math.floor(fx * G.w)), v = Math.min(G.h - 1, Math.floor(fy * G.h));
      return G.at(u, v, S.cut[ax]);
    }

    // ------------------------------------------------------------ state changes
    function refresh(recompute) {
      if (recompute) compute();
      var m = D.maps[S.map];
      var lbl = S.method === "value" ? "value" : D.method_labels[S.method] + " " + S.alpha;
      q('[data-role="threshold-value"]').textContent = "threshold " + fmt(S.t) + " (" + lbl + ")";
      var cnt = q('[data-role="count"]');
      cnt.textContent = S.count + " supra-threshold voxels in " + S.clusters.length + " cluster" + (S.clusters.length === 1 ? "" : "s") +
        (S.extent > 0 ? " of \u2265 " + S.extent + " voxels" : "");
      cnt.dataset.count = S.count;
      q('[data-role="note"]').textContent = S.note;
      q('[data-role="empty"]').hidden = S.count > 0;
      var top = m.two_sided ? m.max_abs : m.vmax;
      q('[data-role="colorbar"]').innerHTML = (m.two_sided ? '<span class="gv-colorbar" style="background:linear-gradient(90deg,#00ffff,#0028ff)"></span> ' : "") +
        '<span class="gv-colorbar" style="background:linear-gradient(90deg,#ff2800,#ffff00)"></span> ' +
        (m.two_sided ? "|value| " : "") + fmt(S.t) + " \u2026 " + fmt(top);
      root.dataset.threshold = S.t; root.dataset.count = S.count;
      root.dataset.cut = S.cut.map(function (c, a) { return mm(a, c); }).join(",");
      if (recompute) liveTable();
      draw();
    }
    function setThreshold(t, method) {
      var m = D.maps[S.map], top = Math.max(m.two_sided ? m.max_abs : m.vmax, 0);
      S.note = "";
      if (method === "value") {
        if (!isFinite(t)) { S.note = "threshold is not a number; kept " + fmt(S.t); t = S.t; }
        else if (t > top) { S.note = "threshold " + fmt(t) + " is above the map's maximum " + fmt(top) + "; clamped to " + fmt(top); t = top; }
        else if (t < 0) { S.note = "threshold " + fmt(t) + " is below 0; clamped to 0"; t = 0; }
      } else if (t === Infinity) {
        S.note = "no voxel passes " + D.method_labels[method] + " " + S.alpha;
      } else if (t > top) {
        S.note = "the " + D.method_labels[method] + " threshold is above the map's maximum " + fmt(top);
      }
      S.t = t; S.method = method;
      var range = q('input[type=range][data-control="threshold"]');
      range.max = top > 0 ? top : 1; range.step = (top > 0 ? top : 1) / 1000;
      range.value = Math.min(t, range.max);
      var box = q('input[type=number][data-control="threshold"]');
      box.value = isFinite(t) ? +t.toFixed(4) : "";
      box.dataset.shown = box.value;
      q('select[data-control="method"]').value = method;
      q('[data-role="alpha-label"]').hidden = method === "value";
    }
    function applyMethod(method, alpha) {
      var m = D.maps[S.map];
      if (method === "value" || !m.methods[method]) { setThreshold(S.t, "value"); return; }
      var tab = m.methods[method], keys = Object.keys(tab);
      if (keys.indexOf(alpha) < 0) alpha = keys.indexOf("0.05") >= 0 ? "0.05" : keys[0];
      var sel = q('select[data-control="alpha"]');
      sel.innerHTML = "";
      keys.forEach(function (a) { var o = document.createElement("option"); o.value = a; o.textContent = a; sel.appendChild(o); });
      sel.value = alpha; S.alpha = alpha;
      var t = tab[alpha];
      setThreshold(t === null ? Infinity : t, method);
    }
    function selectMap(i) {
      S.map = i;
      var m = D.maps[i];
      q('select[data-control="map"]').value = String(i);
      qa('select[data-control="method"] option').forEach(function (o) {
        var ok = o.value === "value" || !!m.methods[o.value];
        o.hidden = !ok; o.disabled = !ok;
      });
      clusterTable();
      if (m.threshold !== null && m.threshold !== undefined) setThreshold(m.threshold, "value");
      else applyMethod(m.method, m.alpha);
      refresh(true);
    }
    function setCut(ijk) {
      S.cut = [0, 1, 2].map(function (a) { return Math.max(0, Math.min(D.shape[a] - 1, ijk[a])); });
      ["x", "y", "z"].forEach(function (name, a) {
        q('input[data-control="' + name + '"]').value = mm(a, S.cut[a]);
        q('[data-role="' + name + '-value"]').textContent = fmt(mm(a, S.cut[a]));
      });
    }
    function goTo(x, y, z) { setCut([vox(0, x), vox(1, y), vox(2, z)]); refresh(false); }

    function rowsTable(caption, cols, rows, source) {
      var t = document.createElement("table"), cap = t.createCaption(), head = t.createTHead().insertRow();
      cap.textContent = caption;
      cols.forEach(function (c) { var th = document.createElement("th"); th.textContent = c; head.appendChild(th); });
      var body = t.createTBody();
      rows.forEach(function (r) {
        var tr = body.insertRow();
        tr.dataset.role = "cluster-row"; tr.dataset.source = source; tr.tabIndex = 0;
        tr.dataset.x = r.xyz[0]; tr.dataset.y = r.xyz[1]; tr.dataset.z = r.xyz[2];
        tr.title = "go to the peak (" + r.xyz.map(fmt).join(", ") + ") mm";
        r.cells.forEach(function (c) { tr.insertCell().textContent = c; });
      });
      return t;
    }
    function clusterTable() {
      var box = q('[data-role="cluster-table"]'), c = D.maps[S.map].clusters;
      box.innerHTML = "";
      if (!c) return;
      box.appendChild(rowsTable("Cluster table (report)", c.columns, c.rows, "report"));
    }
    function liveTable() {
      var box = q('[data-role="live-clusters"]');
      box.innerHTML = "";
      var rows = S.clusters.slice(0, 15).map(function (c, n) {
        var xyz = [mm(0, c.i), mm(1, c.j), mm(2, c.k)];
        return {xyz: xyz, cells: [String(n + 1), String(c.size), fmt(c.peak)].concat(xyz.map(fmt))};
      });
      var more = S.clusters.length > 15 ? " (15 largest of " + S.clusters.length + ")" : "";
      box.appendChild(rowsTable("Clusters at this threshold" + more, ["#", "voxels", "peak", "x", "y", "z"], rows, "live"));
    }

    // ------------------------------------------------------------ wiring
    function wire() {
      var mapSel = q('select[data-control="map"]');
      D.maps.forEach(function (m, i) { var o = document.createElement("option"); o.value = String(i); o.textContent = m.label; mapSel.appendChild(o); });
      var methSel = q('select[data-control="method"]');
      Object.keys(D.method_labels).forEach(function (k) {
        if (k !== "value" && !allMethods[k]) return;  // e.g. no permutation map: no FWER entry
        var o = document.createElement("option"); o.value = k; o.textContent = D.method_labels[k]; methSel.appendChild(o);
      });
      mapSel.addEventListener("change", function () { selectMap(+mapSel.value); });
      methSel.addEventListener("change", function () { applyMethod(methSel.value, S.alpha); refresh(true); });
      q('select[data-control="alpha"]').addEventListener("change", function (ev) { applyMethod(S.method, ev.target.value); refresh(true); });
      q('input[type=range][data-control="threshold"]').addEventListener("input", function (ev) { setThreshold(+ev.target.value, "value"); refresh(true); });
      q('input[type=number][data-control="threshold"]').addEventListener("change", function (ev) {
        if (ev.target.value === ev.target.dataset.shown) return;  // e.g. the change fired again on blur
        setThreshold(ev.target.value === "" ? NaN : +ev.target.value, "value"); refresh(true);
      });
      q('input[data-control="extent"]').addEventListener("input", function (ev) {
        var e = Math.floor(+ev.target.value); S.extent = isFinite(e) && e > 0 ? e : 0; refresh(true);
      });
      q('select[data-control="mode"]').addEventListener("change", function (ev) { S.mode = ev.target.value; refresh(false); });
      ["x", "y", "z"].forEach(function (name, a) {
        var r = q('input[data-control="' + name + '"]'), lo = mm(a, 0), hi = mm(a, D.shape[a] - 1);
        r.min = Math.min(lo, hi); r.max = Math.max(lo, hi); r.step = vs[a];
        r.addEventListener("input", function () { var c = S.cut.slice(); c[a] = vox(a, +r.value); setCut(c); refresh(false); });
      });
      root.addEventListener("click", function (ev) {
        var tr = ev.target.closest && ev.target.closest('tr[data-role="cluster-row"]');
        if (tr && root.contains(tr)) goTo(+tr.dataset.x, +tr.dataset.y, +tr.dataset.z);
      });
      root.addEventListener("keydown", function (ev) {
        var tr = ev.target.closest && ev.target.closest('tr[data-role="cluster-row"]');
        if (tr && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); goTo(+tr.dataset.x, +tr.dataset.y, +tr.dataset.z); }
      });
      qa("canvas[data-view]").forEach(function (cv) {
        cv.addEventListener("mousemove", function (ev) {
          var p = where(cv, ev), h = q('[data-role="hover"]');
          if (!p) { h.textContent = ""; return; }
          var v = vols[S.map][idx(p[0], p[1], p[2])];
          h.textContent = "x=" + fmt(mm(0, p[0])) + " y=" + fmt(mm(1, p[1])) + " z=" + fmt(mm(2, p[2])) + " mm  " +
            D.maps[S.map].label + " = " + (v === v ? fmt(v) : "outside mask");
        });
        cv.addEventListener("click", function (ev) { var p = where(cv, ev); if (p) { setCut(p); refresh(false); } });
      });
    }

    function fail(err) {
      var e = q('[data-role="error"]');
      e.hidden = false; e.textContent = "The viewer could not start: " + err.message;
      if (window.console) console.warn("glmkit viewer:", err);
    }
    try {
      inflate(D.mask).then(function (bits) {
        inMask = new Uint8Array(nvox);
        var list = [];
        for (var f = 0; f < nvox; f++) if (bits[f >> 3] & (128 >> (f & 7))) { inMask[f] = 1; list.push(f); }
        maskIdx = Int32Array.from(list);
        return Promise.all([D.background ? inflate(D.background) : null].concat(D.maps.map(decodeMap)));
      }).then(function (decoded) {
        bg = decoded[0]; vols = decoded.slice(1);  // every map decoded once: later changes are synchronous
        wire();
        setCut([vox(0, D.cut[0]), vox(1, D.cut[1]), vox(2, D.cut[2])]);
        var first = 0;
        D.maps.forEach(function (m, i) { if (m.name === D.default_map) first = i; });
        selectMap(first);
        q('[data-role="app"]').hidden = false;
        root.dataset.ready = "1";
        root.glmkit = {state: S, goTo: goTo, selectMap: selectMap};
      }).catch(fail);
    } catch (err) { fail(err); }
  };
})();
