/* CG81 web chat: renders the assistant's turns as cards. Everything from the server is inserted as text
 * (textContent / createElement), never parsed as HTML; the page's CSP forbids inline script anyway. */
(function () {
  'use strict';

  var SESSION_KEY = 'cg81.web.session';
  var FEEDBACK_KEY = 'cg81.web.feedback';
  var TIMEOUT_MS = 90000;
  var STRENGTH = {
    'offer': 'Offer', 'consider': 'Consider', 'do not': 'Do not', 'other': 'Other wording', 'research': 'Research'
  };
  var STRENGTH_HELP = {
    'offer': 'A strong recommendation: "offer"',
    'consider': 'A weaker recommendation: "consider"',
    'do not': 'A recommendation against: "do not"',
    'other': 'Strength not signalled by "offer", "consider" or "do not"',
    'research': 'A recommendation for research'
  };
  var NICE_PAGE = 'https://www.nice.org.uk/guidance/cg81/chapter/Recommendations';

  var log, form, input, sendBtn, typing, empty, notice, announcer;
  var session = null;
  var busy = false;
  var failures = [];  // questions not answered: {user, error, text}, each with its own Try again

  // ------------------------------------------------------------------ helpers
  function el(tag, props) {
    var node = document.createElement(tag);
    var children = Array.prototype.slice.call(arguments, 2);
    if (props) {
      Object.keys(props).forEach(function (key) {
        var value = props[key];
        if (value === undefined || value === null || value === false) return;
        if (key === 'text') node.textContent = value;
        else if (key === 'className') node.className = value;
        else if (key === 'dataset') Object.keys(value).forEach(function (d) { node.dataset[d] = value[d]; });
        else if (key.slice(0, 2) === 'on') node.addEventListener(key.slice(2), value);
        else if (value === true) node.setAttribute(key, '');
        else node.setAttribute(key, String(value));
      });
    }
    children.forEach(function (child) {
      if (child === null || child === undefined || child === false) return;
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    });
    return node;
  }

  function svgIcon(paths) {
    var ns = 'http://www.w3.org/2000/svg';
    var svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    paths.forEach(function (d) {
      var p = document.createElementNS(ns, 'path');
      p.setAttribute('d', d);
      svg.appendChild(p);
    });
    return svg;
  }
  var THUMB_UP = ['M7 11v9H4v-9h3z', 'M7 11l4-8c1.7 0 2.6 1 2.3 2.6L12.8 9H19a2 2 0 0 1 2 2.3l-1.2 7A2 2 0 0 1 17.8 20H7'];
  var THUMB_DOWN = ['M17 13V4h3v9h-3z', 'M17 13l-4 8c-1.7 0-2.6-1-2.3-2.6l.5-3.4H5a2 2 0 0 1-2-2.3l1.2-7A2 2 0 0 1 6.2 4H17'];

  function announce(text) {
    announcer.textContent = '';
    window.setTimeout(function () { announcer.textContent = text; }, 50);
  }

  function store(key, value) {
    try {
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, JSON.stringify(value));
    } catch (e) { /* private mode: the conversation just won't survive a reload */ }
  }

  function load(key) {
    try { return JSON.parse(window.localStorage.getItem(key)); } catch (e) { return null; }
  }

  // ------------------------------------------------------------------ server
  function api(path, method, body) {
    var controller = new AbortController();
    var timer = window.setTimeout(function () { controller.abort(); }, TIMEOUT_MS);
    var headers = { 'Accept': 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (session) headers['X-CG81-Session'] = session.token;  // Authorization stays the proxy's
    return fetch(path, {
      method: method || 'GET', headers: headers, cache: 'no-store', credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body), signal: controller.signal
    }).then(function (resp) {
      return resp.json().then(function (data) {
        return { status: resp.status, ok: resp.ok && data !== null && typeof data === 'object', data: data };
      }, function () { return { status: resp.status, ok: false, data: null }; });
    }, function (err) {
      return { status: 0, ok: false, data: null, timedOut: err && err.name === 'AbortError' };
    }).finally(function () { window.clearTimeout(timer); });
  }

  function newSession() {
    session = null;
    return api('session', 'POST', {}).then(function (r) {
      if (r.ok && typeof r.data.token === 'string') {
        session = { conversation_id: r.data.conversation_id, token: r.data.token };
        store(SESSION_KEY, session);
        return true;
      }
      store(SESSION_KEY, null);
      return false;
    });
  }

  // ------------------------------------------------------------------ rendering: text
  /* The exact recommendation text, laid out (bullets as a list) with textContent equal to the corpus text:
   * the line breaks sit in text nodes between the blocks, where they are not rendered. */
  function recText(text) {
    var box = el('div', { className: 'rec-text', 'data-rec-text': '' });
    var lines = String(text).split('\n');
    var list = null;
    lines.forEach(function (line, i) {
      if (i > 0) (list && line.indexOf('• ') === 0 ? list : box).appendChild(document.createTextNode('\n'));
      if (line.indexOf('• ') === 0) {
        if (!list) { list = el('ul'); box.appendChild(list); }
        list.appendChild(el('li', null, el('span', { className: 'bullet', 'aria-hidden': 'true', text: '•' }),
          document.createTextNode(' '), line.slice(2)));
      } else {
        list = null;
        box.appendChild(el('p', { className: line === 'Why this is important' ? 'subhead' : null, text: line }));
      }
    });
    return box;
  }

  function where(a) {
    var place = a.kind === 'research' ? 'Recommendations for research' : a.section + ' ' + a.section_title;
    return a.subsection ? place + ' › ' + a.subsection : place;
  }

  function citation(a) {
    var label = a.kind === 'research' ? 'research recommendation' : 'recommendation';
    return 'NICE CG81 ' + label + ' ' + a.id + ' [' + a.year + ']: ' + a.text;
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).then(function () { return true; }, function () { return legacyCopy(text); });
    }
    return Promise.resolve(legacyCopy(text));
  }

  function legacyCopy(text) {
    var area = el('textarea', { readonly: true, className: 'visually-hidden' });
    area.value = text;
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    area.remove();
    return ok;
  }

  // ------------------------------------------------------------------ rendering: cards
  function feedbackGroup(turnId, recIds, label) {
    if (!turnId) return null;
    var key = turnId + ':' + (recIds.join(',') || '-');
    var saved = (load(FEEDBACK_KEY) || {})[key];
    var group = el('span', { className: 'feedback', role: 'group', 'aria-label': 'Feedback on ' + label });
    var buttons = {};
    ['up', 'down'].forEach(function (value) {
      var name = value === 'up' ? 'Helpful' : 'Not helpful';
      var btn = el('button', {
        type: 'button', className: 'icon-btn', 'aria-pressed': saved === value ? 'true' : 'false',
        title: name, dataset: { feedback: value },
        onclick: function () { giveFeedback(turnId, recIds, value, buttons, key, label); }
      }, svgIcon(value === 'up' ? THUMB_UP : THUMB_DOWN), el('span', { className: 'visually-hidden', text: name }));
      buttons[value] = btn;
      group.appendChild(btn);
    });
    return group;
  }

  function giveFeedback(turnId, recIds, value, buttons, key, label) {
    api('feedback', 'POST', { turn_id: turnId, rec_ids: recIds, value: value }).then(function (r) {
      if (r.ok && r.data.stored) {
        buttons.up.setAttribute('aria-pressed', String(value === 'up'));
        buttons.down.setAttribute('aria-pressed', String(value === 'down'));
        var all = load(FEEDBACK_KEY) || {};
        all[key] = value;
        store(FEEDBACK_KEY, all);
        announce('Thank you: your feedback on ' + label + ' was recorded.');
      } else {
        announce('Your feedback could not be saved. Please try again.');
      }
    });
  }

  function answerCard(a, link, turnId) {
    var strength = a.kind === 'research' ? 'research' : (STRENGTH[a.strength] ? a.strength : 'other');
    var slug = strength.replace(/\s+/g, '-');
    var label = (a.kind === 'research' ? 'research recommendation ' : 'recommendation ') + a.id;
    var titleId = 'rec-' + (turnId || 'h') + '-' + a.id.replace(/\W/g, '-');
    var copyBtn = el('button', { type: 'button', className: 'btn btn--small btn--outline', text: 'Copy citation' });
    copyBtn.addEventListener('click', function () {
      copyText(citation(a)).then(function (ok) {
        copyBtn.textContent = ok ? 'Copied' : 'Copy failed';
        announce(ok ? 'Citation for ' + label + ' copied.' : 'The citation could not be copied.');
        window.setTimeout(function () { copyBtn.textContent = 'Copy citation'; }, 2500);
      });
    });
    return el('article', { className: 'card card--' + slug, 'aria-labelledby': titleId, dataset: { recId: a.id } },
      el('div', { className: 'card__head' },
        el('h3', { className: 'card__title', id: titleId },
          (a.kind === 'research' ? 'Research recommendation ' : 'Recommendation ') + a.id + ' ',
          el('span', { className: 'card__year', text: '[' + a.year + ']' })),
        el('span', { className: 'badge badge--' + slug, title: STRENGTH_HELP[strength], text: STRENGTH[strength] })),
      el('p', { className: 'card__where', text: where(a) }),
      recText(a.text),
      el('div', { className: 'card__actions' },
        el('a', { className: 'card__link', href: safeLink(link), target: '_blank', rel: 'noopener noreferrer' },
          'View on NICE website',
          el('span', { className: 'visually-hidden', text: ' (' + label + ', opens in a new tab)' })),
        copyBtn,
        feedbackGroup(turnId, [a.id], label)));
  }

  function abstentionCard(text, turnId) {
    var titleId = 'abstain-' + (turnId || Math.random().toString(16).slice(2));
    return el('article', { className: 'card card--abstain', 'aria-labelledby': titleId, dataset: { abstained: 'true' } },
      el('div', { className: 'card__head' },
        el('h3', { className: 'card__title', id: titleId, text: 'No recommendation in CG81' }),
        el('span', { className: 'badge', text: 'Not covered' })),
      el('p', { className: 'card__body', text: text || 'NICE CG81 has no recommendation on this.' }),
      turnId ? el('div', { className: 'card__actions' }, feedbackGroup(turnId, [], 'this answer')) : null);
  }

  function chips(ids) {
    return el('div', { className: 'chips', role: 'group', 'aria-label': 'Also relevant recommendations' },
      el('span', { className: 'chips__label', 'aria-hidden': 'true', text: 'Also relevant:' }),
      ids.map(function (id) {
        return el('button', {
          type: 'button', className: 'chip', dataset: { lookup: id }, 'aria-label': 'Show recommendation ' + id,
          onclick: function () { sendMessage('Show recommendation ' + id); input.focus(); }
        }, id);
      }).reduce(function (frag, b) { frag.appendChild(b); return frag; }, document.createDocumentFragment()));
  }

  function options(clarification, buttons) {
    var list = buttons.length ? buttons : clarification.options.map(function (o) { return { title: o, payload: o }; });
    var group = el('div', { className: 'options', role: 'group', 'aria-label': 'Answer options' });
    list.forEach(function (b) {
      group.appendChild(el('button', {
        type: 'button', className: 'btn btn--outline option', dataset: { option: b.title },
        onclick: function (ev) {
          if (busy) return;
          ev.currentTarget.classList.add('is-chosen');
          disableOptions();
          sendMessage(b.payload);
          input.focus();
        }
      }, b.title));
    });
    return group;
  }

  function disableOptions() {
    Array.prototype.forEach.call(log.querySelectorAll('.option'), function (b) { b.disabled = true; });
  }

  /* Paragraphs of the bot's text that the cards do not already show (notes, list headers, unknown IDs). */
  function extraParagraphs(texts, answers) {
    var out = [];
    texts.join('\n\n').split(/\n{2,}/).forEach(function (p) {
      p = p.trim();
      if (!p || p.indexOf('NICE CG81 recommendation ') === 0 || p.indexOf('NICE CG81 research recommendation ') === 0
          || p.indexOf('Also relevant:') === 0) return;
      if (answers.some(function (a) { return p.indexOf(a.text) !== -1; })) return;
      out.push(p);
    });
    return out;
  }

  function botTurn(turn, links) {
    var box = el('div', { className: 'turn turn--bot', dataset: { turnId: turn.turn_id || '' } });
    var texts = [], buttons = [], payload = null;
    (turn.messages || []).forEach(function (m) {
      if (typeof m.text === 'string' && m.text) texts.push(m.text);
      if (Array.isArray(m.buttons)) buttons = buttons.concat(m.buttons);
      if (!payload && m.custom && m.custom.type === 'guideline_answer') payload = m.custom;
    });
    links = links || {};
    if (!payload) {
      texts.forEach(function (t) { box.appendChild(el('div', { className: 'bubble bubble--bot', text: t })); });
      if (!texts.length) box.appendChild(el('div', { className: 'bubble bubble--bot', text: 'No reply was recorded for this message.' }));
      if (buttons.length) box.appendChild(options({ options: [] }, buttons));
      return box;
    }
    var answers = Array.isArray(payload.answers) ? payload.answers : [];
    if (payload.abstained) {
      box.appendChild(abstentionCard(texts.join('\n\n'), turn.turn_id));
      return box;
    }
    if (payload.clarification) {
      box.appendChild(el('section', { className: 'clarify', 'aria-label': 'Question from the assistant' },
        el('p', { className: 'clarify__question', text: payload.clarification.question }),
        options(payload.clarification, buttons)));
      (payload.notes || []).forEach(function (n) { box.appendChild(el('p', { className: 'note', text: n })); });
      if (answers.length) {
        box.appendChild(el('p', { className: 'candidates-title', text: 'Meanwhile, the candidate recommendations are:' }));
        answers.forEach(function (a) { box.appendChild(answerCard(a, links[a.id], turn.turn_id)); });
      }
      return box;
    }
    var shown = answers.filter(function (a) { return texts.some(function (t) { return t.indexOf(a.text) !== -1; }); });
    if (!shown.length) shown = answers.slice(0, 1);
    extraParagraphs(texts, answers).forEach(function (p) { box.appendChild(el('p', { className: 'note', text: p })); });
    shown.forEach(function (a) { box.appendChild(answerCard(a, links[a.id], turn.turn_id)); });
    var rest = answers.filter(function (a) { return shown.indexOf(a) === -1; }).map(function (a) { return a.id; });
    if (rest.length) box.appendChild(chips(rest));
    return box;
  }

  /* A turn that began a new session: the assistant no longer holds the earlier patient details. */
  function sessionBreak(text) {
    return el('p', { className: 'session-break' },
      el('span', { text: text || 'The conversation was idle, so a new session began: the assistant no longer ' +
        'holds the earlier patient details.' }));
  }

  function userTurn(text) {
    return el('div', { className: 'turn turn--user' },
      el('span', { className: 'visually-hidden', text: 'You asked:' }),
      el('div', { className: 'bubble bubble--user', text: text }));
  }

  function safeLink(url) {
    return typeof url === 'string' && url.indexOf('https://www.nice.org.uk/') === 0 ? url : NICE_PAGE;
  }

  function errorBlock(kind, text) {
    var why = kind === 'timeout' ? 'The assistant took too long to answer.'
      : kind === 'unreachable' ? 'The assistant cannot be reached right now.'
        : 'The assistant answered with an error.';
    var retry = el('button', { type: 'button', className: 'btn btn--small', text: 'Try again' });
    var block = el('div', { className: 'turn turn--error' },
      el('div', { className: 'error', role: 'alert' },
        el('p', null, el('strong', { text: 'Not answered. ' }), why + ' No recommendation has been given. ' +
          'Your question is kept: try again when the connection is back.'),
        retry));
    retry.addEventListener('click', function () {
      if (busy) return;
      sendMessage(text);
      input.focus();
    });
    return block;
  }

  function showEmpty() {
    empty.hidden = log.children.length > 0;
  }

  function setBusy(on) {
    busy = on;
    typing.hidden = !on;
    sendBtn.disabled = on;
    log.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  function scrollTo(node) {
    var reduce = window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches;
    node.scrollIntoView({ block: 'start', behavior: reduce ? 'auto' : 'smooth' });
  }

  // ------------------------------------------------------------------ conversation
  function sendMessage(text) {
    if (busy) return Promise.resolve();
    if (!text || !text.trim()) {
      announce('Type a question first.');
      input.focus();
      return Promise.resolve();
    }
    failures = failures.filter(function (f) {  // a retry replaces the failed attempt
      if (f.text !== text) return true;
      f.user.remove();
      f.error.remove();
      return false;
    });
    notice.textContent = '';
    var user = userTurn(text);
    log.appendChild(user);
    showEmpty();
    setBusy(true);
    scrollTo(user);
    var ready = session ? Promise.resolve(true) : newSession();
    return ready.then(function (ok) {
      if (!ok) return { status: 0, ok: false, data: null };
      return api('message', 'POST', { message: text }).then(function (r) {
        if (r.status !== 401) return r;
        // The server no longer knows this conversation (restarted, or the token expired): start afresh.
        return newSession().then(function (fresh) {
          if (!fresh) return { status: 0, ok: false, data: null };
          if (user.previousElementSibling) {
            log.insertBefore(sessionBreak('The server did not recognise this conversation (it may have ' +
              'restarted), so a new one began: the assistant no longer holds the earlier patient details.'), user);
          }
          return api('message', 'POST', { message: text });
        });
      });
    }).then(function (r) {
      setBusy(false);
      if (!r.ok || !r.data.turn) {
        var kind = r.timedOut ? 'timeout' : r.status === 0 ? 'unreachable' : 'error';
        user.classList.add('is-failed');
        user.appendChild(el('span', { className: 'turn__status', text: 'Not answered' }));
        var error = errorBlock(kind, text);
        log.appendChild(error);
        failures.push({ user: user, error: error, text: text });
        if (!input.value) input.value = text;
        scrollTo(user);
        return;
      }
      disableOptions();
      if (r.data.turn.new_session && user.previousElementSibling) log.insertBefore(sessionBreak(), user);
      var turn = botTurn(r.data.turn, r.data.links);
      log.appendChild(turn);
      user.dataset.turnId = r.data.turn.turn_id || '';
      scrollTo(user);  // the question and the start of its answer, not the end of a long answer
    });
  }

  function renderHistory(turns, links) {
    log.setAttribute('aria-busy', 'true');
    turns.forEach(function (t) {
      if (t.new_session && log.children.length) log.appendChild(sessionBreak());
      if (t.user) log.appendChild(userTurn(t.user));
      if ((t.messages || []).length || t.user) log.appendChild(botTurn(t, links));
    });
    var buttons = log.querySelectorAll('.option');
    var lastTurn = log.lastElementChild;
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = !lastTurn || !lastTurn.contains(b); });
    log.setAttribute('aria-busy', 'false');
    showEmpty();
    if (lastTurn) lastTurn.scrollIntoView({ block: 'end' });
  }

  function startConversation() {
    failures = [];
    log.textContent = '';
    notice.textContent = '';
    store(FEEDBACK_KEY, null);
    showEmpty();
    return newSession().then(function (ok) {
      announce(ok ? 'New conversation started.' : 'The assistant cannot be reached right now.');
      if (!ok) notice.textContent = 'The assistant cannot be reached right now: a new conversation will start with your next question.';
      input.focus();
    });
  }

  function restore() {
    session = load(SESSION_KEY);
    if (!session || typeof session.token !== 'string') {
      session = null;
      return newSession();
    }
    return api('history', 'GET').then(function (r) {
      if (r.status === 401) {
        notice.textContent = 'Your earlier conversation has ended on the server; this is a new one.';
        return newSession();
      }
      if (!r.ok) {
        notice.textContent = 'The earlier conversation could not be loaded right now; you can carry on asking.';
        return;
      }
      if (r.data.complete === false) {
        notice.textContent = 'The earlier conversation could not be loaded right now; you can carry on asking.';
      }
      renderHistory(r.data.turns || [], r.data.links || {});
    });
  }

  function init() {
    log = document.getElementById('log');
    form = document.getElementById('composer');
    input = document.getElementById('question');
    sendBtn = document.getElementById('send');
    typing = document.getElementById('typing');
    empty = document.getElementById('empty');
    notice = document.getElementById('notice');
    announcer = document.getElementById('announcer');

    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (busy) return;
      var text = input.value;
      if (!text.trim()) { announce('Type a question first.'); return; }
      input.value = '';
      autosize();
      sendMessage(text);
    });
    input.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        if (typeof form.requestSubmit === 'function') form.requestSubmit(); else sendBtn.click();
      }
    });
    function autosize() {
      input.style.height = 'auto';
      input.style.height = Math.min(input.scrollHeight + 4, 180) + 'px';
    }
    input.addEventListener('input', autosize);
    document.getElementById('new-conversation').addEventListener('click', startConversation);
    Array.prototype.forEach.call(document.querySelectorAll('.example'), function (b) {
      b.addEventListener('click', function () { sendMessage(b.textContent.trim()); input.focus(); });
    });
    restore().then(function () {
      showEmpty();
      document.body.dataset.ready = 'true';
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
