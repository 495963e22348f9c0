// The operator's console: reads the admin API of this listener and draws what it says. Every
// value from the API is data (payers and routes come from outside): it is only ever set as text
// (textContent, attributes set one by one), never parsed as markup.
'use strict';

(function () {
  const TOKEN_KEY = 'x402-admin-token';
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);
  let nextCursor = null;

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(endpoint, params) {
    const query = params ? new URLSearchParams(params).toString() : '';
    const headers = {};
    if (token()) headers.Authorization = `Bearer ${token()}`;
    const response = await fetch(`/admin/api/${endpoint}${query ? `?${query}` : ''}`, { headers, cache: 'no-store' });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      throw new ApiError(response.status, body && body.error, (body && body.message) || `HTTP ${response.status}`);
    }
    return body;
  }

  // An element with text content and attributes; children appended as given.
  function el(tag, text, attrs, ...children) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function showError(message) {
    const box = $('error');
    box.textContent = message || '';
    box.hidden = !message;
  }

  function when(text) {
    const date = new Date(text);
    if (Number.isNaN(date.getTime())) return String(text || '');
    return date.toISOString().replace('T', ' ').replace(/:\d\d\.\d+Z$/, ' UTC');
  }

  function short(text, keep = 6) {
    const s = String(text || '');
    return s.length > keep * 2 + 3 ? `${s.slice(0, keep + 2)}…${s.slice(-keep)}` : s;
  }

  function money(display, amount, symbol) {
    if (display !== null && display !== undefined && symbol) return `${display} ${symbol}`;
    return `${amount} (atomic)`;
  }

  function paymentAmount(p) {
    return money(p.display, p.amount, p.symbol);
  }

  function transactionCell(p) {
    const cell = el('td', null, { class: 'mono' });
    if (p.transaction && typeof p.explorer_url === 'string' && /^https?:\/\//.test(p.explorer_url)) {
      const link = el('a', short(p.transaction), { href: p.explorer_url, target: '_blank', rel: 'noopener noreferrer', title: p.transaction });
      cell.append(link);
    } else {
      cell.textContent = p.transaction ? short(p.transaction) : '—';
      if (p.transaction) cell.title = p.transaction;
    }
    return cell;
  }

  function rangeParams() {
    const range = $('range').value;
    const params = { bucket: $('bucket').value };
    if (range !== 'all') params.from = new Date(Date.now() - Number(range) * 3600e3).toISOString();
    return params;
  }

  function renderTotals(revenue) {
    const box = $('totals');
    clear(box);
    if (!revenue.totals.length) {
      box.append(el('p', 'No settled payments in this range.', { class: 'muted' }));
      return;
    }
    for (const t of revenue.totals) {
      box.append(
        el('div', null, { class: 'card', 'data-network': t.network, 'data-asset': t.asset },
          el('div', money(t.display, t.amount, t.symbol), { class: 'big total' }),
          el('div', `${t.count} payment${t.count === 1 ? '' : 's'} on ${t.network}`, { class: 'muted' })));
    }
  }

  // Bars of the revenue per bucket, in the units of the asset that earned most in the range.
  function renderChart(revenue, params) {
    const figure = $('chart');
    clear(figure);
    const step = revenue.bucket === 'day' ? 86400e3 : 3600e3;
    const known = revenue.totals.filter((t) => t.symbol && t.decimals !== null);
    if (!known.length) {
      figure.append(el('figcaption', 'Nothing to chart.', { class: 'muted' }));
      return;
    }
    const bySymbol = new Map();
    for (const t of known) bySymbol.set(t.symbol, (bySymbol.get(t.symbol) || 0) + Number(t.display));
    const symbol = [...bySymbol.entries()].sort((a, b) => b[1] - a[1])[0][0];
    const sums = new Map();
    for (const s of revenue.series) {
      if (s.symbol !== symbol || s.display === null) continue;
      const start = Date.parse(s.start);
      sums.set(start, (sums.get(start) || 0) + Number(s.display));
    }
    const starts = [...sums.keys()];
    const first = params.from ? Math.floor(Date.parse(params.from) / step) * step : Math.min(...starts);
    const last = Math.max(Math.floor(Date.now() / step) * step, ...starts);
    let buckets = [];
    for (let t = first; t <= last; t += step) buckets.push(t);
    buckets = buckets.slice(-240);
    const max = Math.max(...buckets.map((t) => sums.get(t) || 0), 0);
    // Drawn at the figure's own width, so that labels keep their size on a phone.
    const width = Math.round(Math.max(280, Math.min(1200, figure.clientWidth || 600)));
    const height = width < 500 ? 160 : 200;
    const left = 48;
    const bottom = 20;
    const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Revenue per ${revenue.bucket} in ${symbol}`, 'data-buckets': buckets.length, 'data-symbol': symbol });
    const title = svg('title');
    title.textContent = `Revenue per ${revenue.bucket} (${symbol})`;
    chart.append(title);
    chart.append(svg('line', { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: 'axis' }));
    const top = svg('text', { x: left - 4, y: 12, 'text-anchor': 'end', class: 'label' });
    top.textContent = String(Math.round(max * 1e6) / 1e6);
    const zero = svg('text', { x: left - 4, y: height - bottom, 'text-anchor': 'end', class: 'label' });
    zero.textContent = '0';
    chart.append(top, zero);
    const slot = (width - left) / Math.max(buckets.length, 1);
    buckets.forEach((t, i) => {
      const value = sums.get(t) || 0;
      if (value <= 0) return;
      const h = max > 0 ? Math.max(1, (value / max) * (height - bottom - 16)) : 0;
      const bar = svg('rect', {
        x: left + i * slot + slot * 0.1,
        y: height - bottom - h,
        width: Math.max(slot * 0.8, 1),
        height: h,
        class: 'bar',
        'data-start': new Date(t).toISOString(),
        'data-value': value,
      });
      const tip = svg('title');
      tip.textContent = `${when(new Date(t).toISOString())}: ${value} ${symbol}`;
      bar.append(tip);
      chart.append(bar);
    });
    for (const [i, anchor] of [[0, 'start'], [buckets.length - 1, 'end']]) {
      if (i < 0) continue;
      const label = svg('text', { x: anchor === 'start' ? left : width, y: height - 4, 'text-anchor': anchor, class: 'label' });
      label.textContent = when(new Date(buckets[i]).toISOString());
      chart.append(label);
    }
    figure.append(chart, el('figcaption', `${symbol} per ${revenue.bucket}`, { class: 'muted' }));
  }

  function priceText(options) {
    return (options || []).map((o) => `${o.price} ${o.symbol} on ${o.network}${o.scheme === 'exact' ? '' : ` (${o.scheme})`}`).join(', ');
  }

  function renderRoutes(config, revenue) {
    const body = $('routes').tBodies[0];
    clear(body);
    const earned = new Map();
    for (const r of revenue.routes) {
      const list = earned.get(r.route) || [];
      list.push(r);
      earned.set(r.route, list);
    }
    const rows = [];
    for (const route of config.routes) {
      if (route.kind === 'priced') rows.push({ route: route.route, price: priceText(route.options) });
      if (route.kind === 'mcp') for (const item of route.items) rows.push({ route: `${route.route} ${item.item}`, price: priceText(item.options) });
      if (route.kind === 'free') rows.push({ route: route.route, price: 'free' });
    }
    for (const name of earned.keys()) if (!rows.some((r) => r.route === name)) rows.push({ route: name, price: '(no longer configured)' });
    for (const row of rows) {
      const sums = earned.get(row.route) || [];
      const count = sums.reduce((n, s) => n + s.count, 0);
      const total = sums.map((s) => money(s.display, s.amount, s.symbol)).join(', ') || '—';
      body.append(el('tr', null, { 'data-route': row.route },
        el('td', row.route, { class: 'mono' }),
        el('td', row.price),
        el('td', count, { class: 'num' }),
        el('td', total, { class: 'num' })));
    }
  }

  function renderAttention(attention) {
    const body = $('attention').tBodies[0];
    clear(body);
    const counts = Object.entries(attention.counts || {}).map(([k, v]) => `${v} ${k.replace(/_/g, ' ')}`);
    $('attention-summary').textContent = counts.length ? counts.join(' · ') : 'Nothing needs attention.';
    for (const p of attention.payments) {
      body.append(el('tr', null, { 'data-id': p.id, 'data-attention': p.attention },
        el('td', when(p.first_time), { class: 'when' }),
        el('td', (p.attention || '').replace(/_/g, ' '), { class: `tag ${p.attention}` }),
        el('td', p.route, { class: 'mono' }),
        el('td', p.payer, { class: 'mono payer', title: p.payer }),
        el('td', paymentAmount(p), { class: 'num' }),
        transactionCell(p),
        el('td', p.reason || '—', { class: 'mono' })));
    }
  }

  function renderHealth(health) {
    const list = $('health');
    clear(list);
    const item = (term, value, ok) => {
      list.append(el('dt', term), el('dd', value, ok === undefined ? {} : { class: ok ? 'ok' : 'bad' }));
    };
    item('Ready', health.ready ? 'yes' : 'no', !!health.ready);
    for (const [name, f] of Object.entries(health.facilitators || {})) {
      const ago = f.last_ok_ms_ago === null || f.last_ok_ms_ago === undefined ? 'never answered' : `last answer ${Math.round(f.last_ok_ms_ago / 1000)} s ago`;
      item(`Facilitator ${name}`, `${f.reachable ? 'reachable' : 'unreachable'} (${ago})`, !!f.reachable);
    }
    if (health.shared_store) {
      item('Shared store', `${health.shared_store.redis}: ${health.shared_store.reachable ? 'reachable' : 'unreachable'}`, !!health.shared_store.reachable);
    } else {
      item('Shared store', 'none (state kept per process)');
    }
    item('Journal', health.journal);
    item('Requests in flight', health.in_flight);
    if (health.draining) item('Draining', 'yes', false);
  }

  function appendPayments(page) {
    const body = $('payments').tBodies[0];
    for (const p of page.payments) {
      body.append(el('tr', null, { 'data-id': p.id, 'data-state': p.state },
        el('td', when(p.first_time), { class: 'when' }),
        el('td', p.state.replace(/_/g, ' ')),
        el('td', p.route, { class: 'mono' }),
        el('td', p.payer, { class: 'mono payer', title: p.payer }),
        el('td', paymentAmount(p), { class: 'num' }),
        transactionCell(p)));
    }
    nextCursor = page.next_cursor;
    $('more').hidden = !nextCursor;
  }

  function needToken(message) {
    $('main').hidden = true;
    $('login').hidden = false;
    $('forget').hidden = true;
    showError(message);
    $('token').focus();
  }

  async function load() {
    showError('');
    const params = rangeParams();
    try {
      const [config, health] = await Promise.all([api('config'), api('health')]);
      $('login').hidden = true;
      $('main').hidden = false;
      $('forget').hidden = !token();
      renderHealth(health);
      try {
        const [revenue, attention, payments] = await Promise.all([
          api('revenue', params),
          api('attention'),
          api('payments', { limit: 25 }),
        ]);
        renderTotals(revenue);
        renderChart(revenue, params);
        renderRoutes(config, revenue);
        renderAttention(attention);
        clear($('payments').tBodies[0]);
        appendPayments(payments);
      } catch (e) {
        if (e.code !== 'no_journal') throw e;
        renderRoutes(config, { routes: [] });
        showError('This gateway has no [journal]: payments are only logged, so there is nothing to list.');
      }
      $('updated').textContent = `updated ${when(new Date().toISOString())}`;
    } catch (e) {
      if (e.status === 401) {
        const refused = !!token();
        sessionStorage.removeItem(TOKEN_KEY);
        needToken(refused ? 'That token was refused.' : 'This gateway asks for its admin token.');
        return;
      }
      showError(e.message);
    }
  }

  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
    $('token').value = '';
    load();
  });
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    needToken('');
  });
  $('refresh').addEventListener('click', load);
  $('range').addEventListener('change', load);
  $('bucket').addEventListener('change', load);
  $('more').addEventListener('click', async () => {
    if (!nextCursor) return;
    try {
      appendPayments(await api('payments', { limit: 25, cursor: nextCursor }));
    } catch (e) {
      showError(e.message);
    }
  });
  load();
})();
