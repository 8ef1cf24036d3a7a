// ROTA portal: small enhancements. Every page works without this file.
(function () {
  'use strict';

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $$(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  function humanBytes(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
  }

  // Move focus to an error summary or a one-time secret, so that it is
  // read first.
  var focus = $('[data-focus]');
  if (focus) { focus.focus(); }

  // Upload a bundle with a progress bar: the file itself is the body.
  var up = document.getElementById('upload-form');
  if (up && window.XMLHttpRequest) {
    up.addEventListener('submit', function (ev) {
      var input = $('input[type=file]', up);
      if (!input.files || input.files.length !== 1) { return; }
      ev.preventDefault();
      var file = input.files[0];
      var box = $('[data-upload-progress]', up);
      var bar = $('progress', box);
      var status = $('[data-upload-status]', box);
      var err = $('[data-upload-error]', up);
      var btn = $('button[type=submit]', up);

      function fail(msg) {
        err.textContent = msg;
        err.hidden = false;
        input.setAttribute('aria-invalid', 'true');
        input.setAttribute('aria-describedby', err.id);
        btn.disabled = false;
        box.hidden = true;
        input.focus();
      }
      function show(p, text) {
        bar.value = p;
        bar.textContent = p + '%';
        status.textContent = text;
      }

      box.hidden = false;
      err.hidden = true;
      btn.disabled = true;
      show(0, 'Starting the upload…');
      var xhr = new XMLHttpRequest();
      xhr.open('POST', up.action);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.setRequestHeader('X-CSRF-Token', up.elements.csrf.value);
      xhr.upload.addEventListener('progress', function (e) {
        if (e.lengthComputable && e.total > 0) {
          var p = Math.min(100, Math.floor(e.loaded * 100 / e.total));
          show(p, 'Uploading: ' + humanBytes(e.loaded) + ' of ' + humanBytes(e.total));
        }
      });
      xhr.upload.addEventListener('load', function () {
        show(100, 'Uploaded ' + humanBytes(file.size) + '. The server is checking the bundle…');
      });
      xhr.addEventListener('load', function () {
        var res = {};
        try { res = JSON.parse(xhr.responseText); } catch (e) { res = {}; }
        if (xhr.status === 201 && res.location) {
          show(100, 'Done. Opening the release…');
          setTimeout(function () { window.location.assign(res.location); }, 600);
          return;
        }
        if (xhr.status === 401) { window.location.assign('/login'); return; }
        fail(res.error || ('The upload failed with status ' + xhr.status + '.'));
      });
      xhr.addEventListener('error', function () {
        fail('The upload failed: the connection to the server broke.');
      });
      xhr.send(file);
    });
  }

  // Follow a running deployment: poll its progress every two seconds.
  var mon = $('[data-monitor]');
  if (mon && mon.getAttribute('data-live') && window.fetch) {
    var url = mon.getAttribute('data-monitor');
    var shown = mon.getAttribute('data-status-now');

    var updateBar = function (b) {
      var el = $('[data-bar="' + b.key + '"]');
      if (!el) { return; }
      b.segments.forEach(function (s, i) {
        var r = $('[data-seg="' + i + '"]', el);
        if (r) { r.setAttribute('x', s.x); r.setAttribute('width', s.w); }
      });
      $('[data-percent]', el).textContent = b.percent + '%';
      $('[data-text]', el).textContent = b.text;
      $('svg', el).setAttribute('aria-label', b.label + ': ' + b.percent + '% complete, ' + b.text);
    };

    var updateCounts = function (states) {
      var list = $('.state-counts', mon);
      if (!list) { return; }
      while (list.firstChild) { list.removeChild(list.firstChild); }
      states.forEach(function (c) {
        var li = document.createElement('li');
        var badge = document.createElement('span');
        badge.className = c.class;
        badge.textContent = c.state;
        var n = document.createElement('strong');
        n.setAttribute('data-count', c.state);
        n.textContent = String(c.count);
        li.appendChild(badge);
        li.appendChild(document.createTextNode(' '));
        li.appendChild(n);
        list.appendChild(li);
      });
    };

    var poll = function () {
      fetch(url, { headers: { 'Accept': 'application/json' }, credentials: 'same-origin', cache: 'no-store' })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); throw new Error('signed out'); }
          if (!r.ok) { throw new Error('status ' + r.status); }
          return r.json();
        })
        .then(function (p) {
          updateBar(p.overall);
          (p.phases || []).forEach(updateBar);
          updateCounts(p.states || []);
          if (p.status !== shown) {
            // Buttons and the status change with it: draw the page anew.
            window.location.reload();
            return;
          }
          setTimeout(poll, 2000);
        })
        .catch(function () { setTimeout(poll, 5000); });
    };
    setTimeout(poll, 2000);
  }

  // Select every device of the page at once, and count the selection.
  var all = $('[data-select-all]');
  if (all) {
    var boxes = $$('input[type=checkbox][name=id]');
    var note = $('[data-selected]');
    var count = function () {
      var n = boxes.filter(function (b) { return b.checked; }).length;
      if (note) {
        note.textContent = n === 0 ? 'Select devices to accept or reject them together.' :
          n + (n === 1 ? ' device' : ' devices') + ' selected.';
      }
      all.checked = n > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    };
    all.hidden = false;
    all.addEventListener('change', function () {
      boxes.forEach(function (b) { b.checked = all.checked; });
      count();
    });
    boxes.forEach(function (b) { b.addEventListener('change', count); });
  }

  // Copy a one-time secret.
  $$('[data-copy]').forEach(function (btn) {
    var field = document.getElementById(btn.getAttribute('data-copy'));
    if (!field || !navigator.clipboard) { return; }
    btn.hidden = false;
    btn.addEventListener('click', function () {
      navigator.clipboard.writeText(field.value).then(function () {
        btn.textContent = 'Copied';
      });
    });
  });

  // Show only the target fields of the chosen kind of target.
  var radios = $$('input[name=target]');
  if (radios.length) {
    var showTarget = function () {
      var chosen = (radios.filter(function (r) { return r.checked; })[0] || {}).value;
      $$('[data-when]').forEach(function (el) {
        el.hidden = el.getAttribute('data-when') !== chosen;
      });
    };
    radios.forEach(function (r) { r.addEventListener('change', showTarget); });
    showTarget();
  }

  // Start times are typed in the browser's time zone unless told.
  var zone = document.getElementById('f-start_zone');
  if (zone && zone.value === 'UTC' && !$('.alert.error') && window.Intl) {
    try {
      var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
      if (tz) { zone.value = tz; }
    } catch (e) { /* keep UTC */ }
  }
})();
