// shopfront console: live updates from the service's WebSocket feed (docs/realtime.md).
//
// The page says what it shows: every element with `data-live-topic` (and the stores in
// `data-live-stores`) is followed; when an event of that topic arrives, `sf-<topic>` is fired
// on <body> and the element reloads itself (its `hx-trigger`). Notifications are always
// followed: the badge and the center reload, the browser shows a notification when allowed,
// and a sound plays when the user's setting (`data-sound`) is on. The connection is
// authenticated by the session cookie; there is no token in the page.
(function () {
  'use strict';
  var body = document.body;
  if (!body || body.dataset.live !== 'on') return;

  var socket = null;
  var retry = 1000;
  var subscribed = new Set();
  var ready = new Set();

  function wanted() {
    var keys = new Set();
    document.querySelectorAll('[data-live-topic]').forEach(function (el) {
      (el.dataset.liveStores || '').split(',').forEach(function (store) {
        if (store) keys.add(el.dataset.liveTopic + '|' + store);
      });
    });
    return keys;
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function sync() {
    var keys = wanted();
    keys.forEach(function (key) {
      if (subscribed.has(key)) return;
      var parts = key.split('|');
      send({ type: 'subscribe', topic: parts[0], store_id: parts[1] });
      subscribed.add(key);
    });
    subscribed.forEach(function (key) {
      if (keys.has(key)) return;
      var parts = key.split('|');
      send({ type: 'unsubscribe', topic: parts[0], store_id: parts[1] });
      subscribed.delete(key);
      ready.delete(key);
    });
    showReady();
  }

  // What is followed, for people and tests: `data-live-subscribed` lists `topic|store` keys.
  function showReady() {
    body.dataset.liveSubscribed = Array.from(ready).join(' ');
  }

  function fire(name, detail) {
    body.dispatchEvent(new CustomEvent(name, { bubbles: true, detail: detail }));
  }

  function chime() {
    try {
      var Context = window.AudioContext || window.webkitAudioContext;
      var context = new Context();
      var tone = context.createOscillator();
      var gain = context.createGain();
      tone.frequency.value = 880;
      gain.gain.setValueAtTime(0.15, context.currentTime);
      gain.gain.exponentialRampToValueAtTime(0.001, context.currentTime + 0.4);
      tone.connect(gain).connect(context.destination);
      tone.start();
      tone.stop(context.currentTime + 0.4);
    } catch (e) {
      // No sound before the user has interacted with the page: nothing to do.
    }
  }

  function announce(notification) {
    if (window.Notification && Notification.permission === 'granted') {
      try {
        new Notification(notification.title || 'shopfront', { body: notification.body || '' });
      } catch (e) {
        // Some browsers only show notifications from a service worker.
      }
    }
    if (body.dataset.sound === 'on' && notification.sound !== 'none') chime();
  }

  function connect() {
    var scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    socket = new WebSocket(scheme + location.host + '/api/v1/ws', ['shopfront.v1']);
    socket.onopen = function () {
      retry = 1000;
      subscribed.clear();
      ready.clear();
      send({ type: 'subscribe', topic: 'notifications' });
      sync();
    };
    socket.onmessage = function (message) {
      var data;
      try {
        data = JSON.parse(message.data);
      } catch (e) {
        return;
      }
      if (data.type === 'event' || data.type === 'kpis') {
        fire('sf-' + data.topic, data);
      } else if (data.type === 'notification') {
        fire('sf-notification', data);
        announce(data);
      } else if (data.type === 'subscribed') {
        ready.add(data.topic + (data.store_id ? '|' + data.store_id : ''));
        showReady();
      }
    };
    socket.onclose = function (event) {
      ready.clear();
      showReady();
      // 4001: the session ended; the next request goes to the sign-in page.
      if (event.code === 4001) return;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    };
  }

  document.addEventListener('htmx:afterSettle', sync);

  var permission = document.getElementById('browser-notifications');
  if (permission && window.Notification) {
    permission.addEventListener('click', function () {
      Notification.requestPermission().then(function (answer) {
        if (answer === 'granted') permission.textContent = permission.dataset.labelOn;
      });
    });
  }

  connect();
})();
