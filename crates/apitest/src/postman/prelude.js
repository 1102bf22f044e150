// The Postman sandbox API (`pm`, chai-like `pm.expect`, the legacy globals),
// evaluated in a fresh QuickJS context before each script. State comes in as
// the JSON text `__input` and goes back through `__output()`, so the Rust side
// needs no bindings beyond `__now` and `__dynamic`. It is compiled once as an
// ES module (script.rs keeps the bytecode), so top-level `this` is undefined:
// reach the global object through `globalThis`.
(function (global) {
  'use strict';
  // Kept before user code runs, which may replace the globals.
  var stringify = JSON.stringify, parse = JSON.parse;
  var input = parse(global.__input);
  delete global.__input;
  var out = { tests: [], console: [], unsupported: [], next: { set: false, name: null }, skip: false };

  // ---------------------------------------------------------------- helpers
  function typeOf(v) {
    if (v === null) return 'null';
    if (Array.isArray(v)) return 'array';
    var t = typeof v;
    if (t !== 'object') return t;
    if (v instanceof RegExp) return 'regexp';
    if (v instanceof Date) return 'date';
    if (v instanceof Error) return 'error';
    if (v instanceof Map) return 'map';
    if (v instanceof Set) return 'set';
    if (typeof Promise !== 'undefined' && v instanceof Promise) return 'promise';
    return 'object';
  }

  function inspect(v, depth) {
    depth = depth || 0;
    var t = typeOf(v);
    if (t === 'string') return "'" + v + "'";
    if (t === 'undefined' || t === 'null' || t === 'number' || t === 'boolean' || t === 'bigint') return String(v);
    if (t === 'function') return '[Function' + (v.name ? ': ' + v.name : '') + ']';
    if (t === 'regexp' || t === 'symbol') return String(v);
    if (t === 'date') return v.toISOString();
    if (t === 'error') return '[' + String(v) + ']';
    if (v instanceof Response) return 'response';
    if (depth > 2) return t === 'array' ? '[Array]' : '[Object]';
    var s;
    if (t === 'array') {
      if (v.length === 0) return '[]';
      s = '[ ' + v.map(function (x) { return inspect(x, depth + 1); }).join(', ') + ' ]';
    } else if (t === 'map' || t === 'set') {
      s = t === 'map' ? 'Map{}' : 'Set{}';
    } else {
      var keys = Object.keys(v);
      if (keys.length === 0) return '{}';
      s = '{ ' + keys.map(function (k) {
        var name = /^[A-Za-z_$][\w$]*$/.test(k) ? k : "'" + k + "'";
        return name + ': ' + inspect(v[k], depth + 1);
      }).join(', ') + ' }';
    }
    return s.length > 200 ? s.slice(0, 197) + '...' : s;
  }

  function text(v) {
    if (v === undefined || v === null) return '';
    if (typeof v === 'string') return v;
    if (typeof v === 'object') {
      try { return JSON.stringify(v); } catch (e) { return String(v); }
    }
    return String(v);
  }

  function deepEqual(a, b, seen) {
    if (a === b) return a !== 0 || 1 / a === 1 / b;
    if (a !== a && b !== b) return true;
    var ta = typeOf(a), tb = typeOf(b);
    if (ta !== tb) return false;
    if (ta === 'date') return a.getTime() === b.getTime();
    if (ta === 'regexp') return String(a) === String(b);
    if (ta !== 'array' && ta !== 'object' && ta !== 'map' && ta !== 'set' && ta !== 'error') return false;
    seen = seen || [];
    for (var i = 0; i < seen.length; i++) if (seen[i][0] === a && seen[i][1] === b) return true;
    seen.push([a, b]);
    if (ta === 'map' || ta === 'set') {
      return deepEqual(Array.from(a.entries()), Array.from(b.entries()), seen);
    }
    if (ta === 'array') {
      if (a.length !== b.length) return false;
      for (var j = 0; j < a.length; j++) if (!deepEqual(a[j], b[j], seen)) return false;
      return true;
    }
    var ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
    if (ka.length !== kb.length) return false;
    for (var k = 0; k < ka.length; k++) {
      if (ka[k] !== kb[k] || !deepEqual(a[ka[k]], b[kb[k]], seen)) return false;
    }
    return true;
  }

  function errInfo(e) {
    if (e && typeof e === 'object') {
      return { name: String(e.name || 'Error'), message: String(e.message === undefined ? e : e.message), unsupported: e.unsupported || null };
    }
    return { name: 'Error', message: String(e), unsupported: null };
  }

  // ---------------------------------------------------------------- errors
  function AssertionError(message) {
    var e = new Error(message);
    Object.setPrototypeOf(e, AssertionError.prototype);
    return e;
  }
  AssertionError.prototype = Object.create(Error.prototype);
  AssertionError.prototype.name = 'AssertionError';
  AssertionError.prototype.constructor = AssertionError;

  function UnsupportedError(what) {
    var e = new Error(what + ' is not supported by this runner');
    Object.setPrototypeOf(e, UnsupportedError.prototype);
    e.unsupported = what;
    return e;
  }
  UnsupportedError.prototype = Object.create(Error.prototype);
  UnsupportedError.prototype.name = 'UnsupportedError';
  UnsupportedError.prototype.constructor = UnsupportedError;

  function note(what) {
    if (out.unsupported.indexOf(what) < 0) out.unsupported.push(what);
  }
  function unsupported(what) {
    note(what);
    throw new UnsupportedError(what);
  }
  // A stand-in for a library or API the sandbox lacks: any use of it names it.
  function missing(what) {
    return new Proxy(function () {}, {
      get: function (t, p) {
        if (typeof p === 'symbol') return undefined;
        return unsupported(what);
      },
      apply: function () { return unsupported(what); },
      construct: function () { return unsupported(what); }
    });
  }

  // ---------------------------------------------------------------- variables
  function Scope(pairs, name) {
    this._m = new Map(pairs);
    if (name !== undefined) this.name = name;
  }
  Scope.prototype.get = function (k) { return this._m.get(String(k)); };
  Scope.prototype.has = function (k) { return this._m.has(String(k)); };
  Scope.prototype.set = function (k, v) { this._m.set(String(k), v); };
  Scope.prototype.unset = function (k) { this._m.delete(String(k)); };
  Scope.prototype.clear = function () { this._m.clear(); };
  Scope.prototype.toObject = function () {
    var o = {};
    this._m.forEach(function (v, k) { o[k] = v; });
    return o;
  };
  Scope.prototype.toJSON = function () {
    var a = [];
    this._m.forEach(function (v, k) { a.push({ key: k, value: v }); });
    return a;
  };
  Scope.prototype.replaceIn = function (s) { return replaceIn(s); };

  var scopes = {
    globals: new Scope(input.vars.globals),
    collection: new Scope(input.vars.collection),
    environment: new Scope(input.vars.environment, input.envName || undefined),
    data: new Scope(input.vars.data),
    local: new Scope(input.vars.local)
  };
  var order = ['local', 'data', 'environment', 'collection', 'globals'];

  function lookup(k) {
    for (var i = 0; i < order.length; i++) {
      var s = scopes[order[i]];
      if (s.has(k)) return { found: true, value: s.get(k) };
    }
    return { found: false };
  }

  function replaceIn(s) {
    if (typeof s !== 'string') return s;
    for (var pass = 0; pass < 20 && s.indexOf('{{') >= 0; pass++) {
      var changed = false;
      s = s.replace(/\{\{([^{}]+?)\}\}/g, function (whole, name) {
        if (name.charAt(0) === '$') {
          var d = __dynamic(name.slice(1));
          if (d === undefined || d === null) {
            note('dynamic variable ' + whole);
            return whole;
          }
          changed = true;
          return d;
        }
        var r = lookup(name);
        if (!r.found) return whole;
        changed = true;
        return text(r.value);
      });
      if (!changed) break;
    }
    return s;
  }

  var variables = {
    get: function (k) { var r = lookup(String(k)); return r.found ? r.value : undefined; },
    has: function (k) { return lookup(String(k)).found; },
    set: function (k, v) { scopes.local.set(k, v); },
    unset: function (k) { scopes.local.unset(k); },
    clear: function () { scopes.local.clear(); },
    replaceIn: replaceIn,
    toObject: function () {
      var o = {};
      for (var i = order.length - 1; i >= 0; i--) {
        var obj = scopes[order[i]].toObject();
        for (var k in obj) o[k] = obj[k];
      }
      return o;
    }
  };

  // ---------------------------------------------------------------- headers
  function HeaderList(list) {
    this._h = (list || []).map(function (h) {
      return Array.isArray(h) ? { key: h[0], value: h[1] } : { key: h.key, value: h.value, disabled: !!h.disabled };
    });
  }
  function same(a, b) { return String(a).toLowerCase() === String(b).toLowerCase(); }
  HeaderList.prototype._on = function () { return this._h.filter(function (h) { return !h.disabled; }); };
  HeaderList.prototype.get = function (name) {
    var h = this._on().find(function (h) { return same(h.key, name); });
    return h ? h.value : undefined;
  };
  HeaderList.prototype.one = function (name) {
    var h = this._on().find(function (h) { return same(h.key, name); });
    return h ? { key: h.key, value: h.value } : undefined;
  };
  HeaderList.prototype.has = function (name, value) {
    return this._on().some(function (h) { return same(h.key, name) && (value === undefined || h.value === value); });
  };
  HeaderList.prototype.all = function () { return this._on().map(function (h) { return { key: h.key, value: h.value }; }); };
  HeaderList.prototype.toObject = function () {
    var o = {};
    this._on().forEach(function (h) { o[h.key] = h.value; });
    return o;
  };
  HeaderList.prototype.toJSON = HeaderList.prototype.all;
  HeaderList.prototype.count = function () { return this._on().length; };
  HeaderList.prototype.each = function (fn) { this.all().forEach(fn); };
  HeaderList.prototype.map = function (fn) { return this.all().map(fn); };
  HeaderList.prototype.filter = function (fn) { return this.all().filter(fn); };
  HeaderList.prototype.find = function (fn) { return this.all().find(fn); };
  HeaderList.prototype.add = function (h) {
    if (typeof h === 'string') { var i = h.indexOf(':'); h = { key: h.slice(0, i).trim(), value: h.slice(i + 1).trim() }; }
    this._h.push({ key: String(h.key), value: text(h.value) });
  };
  HeaderList.prototype.upsert = function (h) {
    var cur = this._h.find(function (x) { return same(x.key, h.key); });
    if (cur) { cur.value = text(h.value); cur.disabled = false; } else this.add(h);
  };
  HeaderList.prototype.remove = function (name) {
    this._h = this._h.filter(function (h) {
      return typeof name === 'function' ? !name(h) : !same(h.key, name);
    });
  };
  HeaderList.prototype.toString = function () {
    return this._on().map(function (h) { return h.key + ': ' + h.value; }).join('\n');
  };

  // ---------------------------------------------------------------- cookies
  // `pm.cookies` and the legacy `responseCookies`/`postman.getResponseCookie`:
  // the run's jar for the URL of the reply, names and values. A list from
  // `pm.cookies.jar().getAll` holds whole cookies (domain, path, expires…).
  function Cookie(c) {
    this.name = c.name;
    this.value = c.value;
    if (c.domain !== undefined) {
      this.expires = c.expires || null;
      this.domain = c.domain;
      this.path = c.path;
      this.secure = !!c.secure;
      this.httpOnly = !!c.httpOnly;
      this.hostOnly = !!c.hostOnly;
    }
  }
  Cookie.prototype.valueOf = function () { return this.value; };
  Cookie.prototype.toString = function () { return this.name + '=' + this.value; };
  function CookieList(items) {
    this._c = (items || []).map(function (p) { return Array.isArray(p) ? { name: p[0], value: p[1] } : new Cookie(p); });
  }
  CookieList.prototype.one = function (name) {
    var c = this._c.find(function (c) { return c.name === String(name); });
    return c ? (c instanceof Cookie ? c : { name: c.name, value: c.value }) : undefined;
  };
  CookieList.prototype.get = function (name) { var c = this.one(name); return c ? c.value : undefined; };
  CookieList.prototype.has = function (name) { return this.one(name) !== undefined; };
  CookieList.prototype.all = function () { return this._c.map(function (c) { return c instanceof Cookie ? c : { name: c.name, value: c.value }; }); };
  CookieList.prototype.toObject = function () {
    var o = {};
    this._c.forEach(function (c) { o[c.name] = c.value; });
    return o;
  };
  CookieList.prototype.toJSON = CookieList.prototype.all;
  CookieList.prototype.count = function () { return this._c.length; };
  CookieList.prototype.each = function (fn) { this.all().forEach(fn); };
  CookieList.prototype.map = function (fn) { return this.all().map(fn); };
  CookieList.prototype.filter = function (fn) { return this.all().filter(fn); };
  CookieList.prototype.find = function (fn) { return this.all().find(fn); };
  CookieList.prototype.jar = function () { return new CookieJar(); };

  // pm.cookies.jar(): the run's own jar, with postman-sandbox's CookieJar
  // methods (Newman has no domain allow-list). The jar answers at once; the
  // callbacks run after the script's own code, as Postman's asynchronous
  // ones do, and what they throw fails the script.
  var jarNative = global.__jar;
  delete global.__jar;
  function jarUrl(url, op) {
    if (url && typeof url === 'object' && typeof url.toString === 'function' && !Array.isArray(url)) url = url.toString();
    if (!url || typeof url !== 'string') throw new TypeError('CookieJar.' + op + '() requires a valid url');
    return url;
  }
  function jarCall(op, args) {
    if (!jarNative) unsupported('pm.cookies.jar');
    args.op = op;
    return parse(jarNative(stringify(args)));
  }
  function later(callback, err, result) {
    if (typeof callback !== 'function') return;
    Promise.resolve().then(function () {
      if (err) callback(new Error(err));
      else callback(null, result);
    }).catch(function (e) { if (!out.thrown) out.thrown = errInfo(e); });
  }
  function CookieJar() {}
  CookieJar.prototype.get = function (url, name, callback) {
    url = jarUrl(url, 'get');
    if (typeof callback !== 'function') throw new TypeError('CookieJar.get() requires a callback function');
    if (typeof name !== 'string') throw new TypeError('CookieJar.get() requires cookie name to be a string');
    var r = jarCall('get', { url: url, name: name });
    later(callback, r.error, r.cookies && r.cookies.length ? r.cookies[0].value : null);
  };
  CookieJar.prototype.getAll = function (url, options, callback) {
    url = jarUrl(url, 'getAll');
    if (typeof options === 'function' && !callback) { callback = options; options = {}; }
    if (typeof callback !== 'function') throw new TypeError('CookieJar.getAll() requires a callback function');
    if (typeof options !== 'object') throw new TypeError('CookieJar.getAll() requires options to be an object');
    var r = jarCall('getAll', { url: url });
    later(callback, r.error, r.error ? undefined : new CookieList(r.cookies));
  };
  CookieJar.prototype.set = function (url, name, value, callback) {
    url = jarUrl(url, 'set');
    if (typeof value === 'function' && !callback) { callback = value; value = null; }
    var cookie;
    if (name && value) cookie = { name: String(name), value: String(value) };
    else if (name && typeof name === 'object') cookie = { name: String(name.name || name.key), value: text(name.value), domain: name.domain, path: name.path, expires: name.expires, maxAge: name.maxAge, secure: name.secure, httpOnly: name.httpOnly, hostOnly: name.hostOnly };
    else if (typeof name === 'string') cookie = { header: name };
    else throw new TypeError('CookieJar.set() requires a valid set cookie arguments');
    var r = jarCall('set', { url: url, cookie: cookie });
    later(callback, r.error, r.cookies && r.cookies.length ? new Cookie(r.cookies[0]) : undefined);
  };
  CookieJar.prototype.unset = function (url, name, callback) {
    url = jarUrl(url, 'unset');
    if (typeof name !== 'string') throw new TypeError('CookieJar.unset() requires cookie name to be a string');
    var r = jarCall('unset', { url: url, name: name });
    later(callback, r.error);
  };
  CookieJar.prototype.clear = function (url, callback) {
    url = jarUrl(url, 'clear');
    var r = jarCall('clear', { url: url });
    later(callback, r.error);
  };

  // ---------------------------------------------------------------- response
  function Response(r) {
    this.code = r.code;
    this.status = r.status;
    this.responseTime = r.responseTime;
    this.responseSize = r.responseSize;
    this.headers = new HeaderList(r.headers);
    this._body = r.body;
  }
  Response.prototype.text = function () { return this._body; };
  Response.prototype.json = function () {
    try {
      return JSON.parse(this._body);
    } catch (e) {
      var err = new Error('"' + (this._body.length > 40 ? this._body.slice(0, 40) + '…' : this._body) + '" is not valid JSON: ' + e.message);
      err.name = 'JSONError';
      throw err;
    }
  };
  Response.prototype.reason = function () { return this.status; };
  Response.prototype.size = function () { return { body: this._body.length, header: 0, total: this.responseSize }; };
  Object.defineProperty(Response.prototype, 'to', { get: function () { return new Assertion(this).to; } });
  Object.defineProperty(Response.prototype, 'cookies', { get: function () { return unsupported('pm.response.cookies'); } });

  // ---------------------------------------------------------------- assertions
  function Assertion(obj, msg) {
    this._obj = obj;
    this._f = { msg: msg, negate: false, deep: false, own: false, doLength: false };
  }
  var P = Assertion.prototype;

  function check(self, ok, positive, negative) {
    var neg = self._f.negate;
    if (neg ? ok : !ok) {
      var m = neg ? negative : positive;
      if (self._f.msg) m = self._f.msg + ': ' + m;
      throw new AssertionError(m);
    }
    return self;
  }
  function subject(self) {
    if (self._f.doLength) {
      var o = self._obj;
      return o instanceof Map || o instanceof Set ? o.size : o === null || o === undefined ? undefined : o.length;
    }
    return self._obj;
  }
  function isResponse(self) {
    if (!(self._obj instanceof Response)) {
      throw new AssertionError('expected ' + inspect(self._obj) + ' to be a response');
    }
    return self._obj;
  }

  function chain(name) { Object.defineProperty(P, name, { get: function () { return this; }, configurable: true }); }
  ['to', 'be', 'been', 'is', 'that', 'which', 'and', 'has', 'have', 'with', 'at', 'of', 'same', 'but', 'does', 'still', 'also', 'itself'].forEach(chain);
  function flag(name, key) {
    Object.defineProperty(P, name, {
      get: function () { this._f[key] = key === 'negate' ? !this._f.negate : true; return this; },
      configurable: true
    });
  }
  flag('not', 'negate'); flag('deep', 'deep'); flag('own', 'own'); flag('nested', 'nested'); flag('any', 'any'); flag('all', 'all');

  function prop(name, fn) { Object.defineProperty(P, name, { get: fn, configurable: true }); }
  function method(names, fn) { names.forEach(function (n) { P[n] = fn; }); }
  // A name that works both as a property (`.include.members`) and as a call
  // (`.include('x')`), as chai's chainable methods do.
  function chainable(names, fn, onChain) {
    names.forEach(function (n) {
      Object.defineProperty(P, n, {
        get: function () {
          var self = this;
          if (onChain) onChain.call(self);
          var call = function () {
            var r = fn.apply(self, arguments);
            return r === undefined ? self : r;
          };
          Object.setPrototypeOf(call, self);
          return call;
        },
        configurable: true
      });
    });
  }

  prop('ok', function () {
    // chai-postman's `ok` of a response is its reason, OK (a 201 is not ok).
    if (this._obj instanceof Response) {
      var reason = String(this._obj.status).toUpperCase();
      return check(this, reason === 'OK', 'expected response to have status reason \'OK\' but got ' + inspect(reason), 'expected response to not have status reason ' + inspect(reason));
    }
    return check(this, !!this._obj, 'expected ' + inspect(this._obj) + ' to be truthy', 'expected ' + inspect(this._obj) + ' to be falsy');
  });
  prop('true', function () { return check(this, this._obj === true, 'expected ' + inspect(this._obj) + ' to be true', 'expected ' + inspect(this._obj) + ' to be false'); });
  prop('false', function () { return check(this, this._obj === false, 'expected ' + inspect(this._obj) + ' to be false', 'expected ' + inspect(this._obj) + ' to be true'); });
  prop('null', function () { return check(this, this._obj === null, 'expected ' + inspect(this._obj) + ' to be null', 'expected ' + inspect(this._obj) + ' not to be null'); });
  prop('undefined', function () { return check(this, this._obj === undefined, 'expected ' + inspect(this._obj) + ' to be undefined', 'expected ' + inspect(this._obj) + ' not to be undefined'); });
  prop('NaN', function () { return check(this, this._obj !== this._obj, 'expected ' + inspect(this._obj) + ' to be NaN', 'expected ' + inspect(this._obj) + ' not to be NaN'); });
  prop('exist', function () { return check(this, this._obj !== null && this._obj !== undefined, 'expected ' + inspect(this._obj) + ' to exist', 'expected ' + inspect(this._obj) + ' to not exist'); });
  prop('empty', function () {
    var o = this._obj, t = typeOf(o), n;
    if (t === 'string' || t === 'array') n = o.length;
    else if (t === 'map' || t === 'set') n = o.size;
    else if (t === 'object') n = Object.keys(o).length;
    else throw new AssertionError('.empty was passed non-string primitive ' + inspect(o));
    return check(this, n === 0, 'expected ' + inspect(o) + ' to be empty', 'expected ' + inspect(o) + ' not to be empty');
  });

  method(['equal', 'equals', 'eq'], function (exp, msg) {
    if (msg) this._f.msg = msg;
    var act = subject(this);
    if (this._f.deep) return check(this, deepEqual(act, exp), 'expected ' + inspect(act) + ' to deeply equal ' + inspect(exp), 'expected ' + inspect(act) + ' to not deeply equal ' + inspect(exp));
    return check(this, act === exp, 'expected ' + inspect(act) + ' to equal ' + inspect(exp), 'expected ' + inspect(act) + ' to not equal ' + inspect(exp));
  });
  method(['eql', 'eqls'], function (exp, msg) {
    if (msg) this._f.msg = msg;
    return check(this, deepEqual(this._obj, exp), 'expected ' + inspect(this._obj) + ' to deeply equal ' + inspect(exp), 'expected ' + inspect(this._obj) + ' to not deeply equal ' + inspect(exp));
  });
  function compare(names, word, test) {
    method(names, function (n, msg) {
      if (msg) this._f.msg = msg;
      var act = subject(this);
      var what = this._f.doLength ? inspect(this._obj) + ' to have a length ' : inspect(act) + ' to be ';
      return check(this, test(act, n), 'expected ' + what + word + ' ' + inspect(n) + (this._f.doLength ? ' but got ' + act : ''), 'expected ' + what.replace(/to (have|be) /, 'to not $1 ') + word + ' ' + inspect(n));
    });
  }
  compare(['above', 'gt', 'greaterThan'], 'above', function (a, n) { return a > n; });
  compare(['least', 'gte', 'greaterThanOrEqual'], 'at least', function (a, n) { return a >= n; });
  compare(['below', 'lt', 'lessThan'], 'below', function (a, n) { return a < n; });
  compare(['most', 'lte', 'lessThanOrEqual'], 'at most', function (a, n) { return a <= n; });
  method(['within'], function (lo, hi) {
    var act = subject(this);
    return check(this, act >= lo && act <= hi, 'expected ' + inspect(act) + ' to be within ' + lo + '..' + hi, 'expected ' + inspect(act) + ' to not be within ' + lo + '..' + hi);
  });
  method(['closeTo', 'approximately'], function (exp, delta) {
    var act = this._obj;
    return check(this, Math.abs(act - exp) <= delta, 'expected ' + inspect(act) + ' to be close to ' + exp + ' +/- ' + delta, 'expected ' + inspect(act) + ' not to be close to ' + exp + ' +/- ' + delta);
  });
  chainable(['a', 'an'], function (type, msg) {
    if (msg) this._f.msg = msg;
    type = String(type).toLowerCase();
    var art = /^[aeiou]/.test(type) ? 'an ' : 'a ';
    return check(this, typeOf(this._obj) === type, 'expected ' + inspect(this._obj) + ' to be ' + art + type, 'expected ' + inspect(this._obj) + ' not to be ' + art + type);
  });
  function includes(self, val) {
    var o = self._obj, t = typeOf(o), deep = self._f.deep;
    if (t === 'string') return o.indexOf(val) >= 0;
    if (t === 'array') return o.some(function (x) { return deep ? deepEqual(x, val) : x === val; });
    if (t === 'set') return Array.from(o).some(function (x) { return deep ? deepEqual(x, val) : x === val; });
    if (t === 'map') return Array.from(o.values()).some(function (x) { return deep ? deepEqual(x, val) : x === val; });
    if (t === 'object' && val && typeof val === 'object') {
      return Object.keys(val).every(function (k) { return deep ? deepEqual(o[k], val[k]) : o[k] === val[k]; });
    }
    throw new AssertionError('the given combination of arguments (' + t + ' and ' + typeOf(val) + ') is invalid for this assertion');
  }
  chainable(['include', 'includes', 'contain', 'contains'], function (val, msg) {
    if (msg) this._f.msg = msg;
    var d = this._f.deep ? 'deep ' : '';
    return check(this, includes(this, val), 'expected ' + inspect(this._obj) + ' to ' + d + 'include ' + inspect(val), 'expected ' + inspect(this._obj) + ' to not ' + d + 'include ' + inspect(val));
  });
  chainable(['length', 'lengthOf'], function (n, msg) {
    if (msg) this._f.msg = msg;
    var o = this._obj;
    var len = o instanceof Map || o instanceof Set ? o.size : o === null || o === undefined ? undefined : o.length;
    return check(this, len === n, 'expected ' + inspect(o) + ' to have a length of ' + n + ' but got ' + len, 'expected ' + inspect(o) + ' to not have a length of ' + n);
  }, function () { this._f.doLength = true; });
  function getPath(o, path) {
    var parts = String(path).replace(/\[(\w+)\]/g, '.$1').split('.').filter(function (p) { return p !== ''; });
    for (var i = 0; i < parts.length; i++) {
      if (o === null || o === undefined || !(parts[i] in Object(o))) return { found: false };
      o = o[parts[i]];
    }
    return { found: true, value: o };
  }
  method(['property'], function (name, val) {
    var o = this._obj;
    var r;
    if (this._f.nested) r = getPath(o, name);
    else if (this._f.own) r = o !== null && o !== undefined && Object.prototype.hasOwnProperty.call(o, name) ? { found: true, value: o[name] } : { found: false };
    else r = o !== null && o !== undefined && name in Object(o) ? { found: true, value: o[name] } : { found: false };
    var what = (this._f.nested ? 'nested ' : this._f.own ? 'own ' : '') + (this._f.deep ? 'deep ' : '') + 'property ' + inspect(name);
    if (arguments.length > 1) {
      var eq = r.found && (this._f.deep ? deepEqual(r.value, val) : r.value === val);
      check(this, eq, 'expected ' + inspect(o) + ' to have ' + what + ' of ' + inspect(val) + (r.found ? ', but got ' + inspect(r.value) : ''), 'expected ' + inspect(o) + ' to not have ' + what + ' of ' + inspect(val));
    } else {
      check(this, r.found, 'expected ' + inspect(o) + ' to have ' + what, 'expected ' + inspect(o) + ' to not have ' + what);
    }
    if (r.found && !this._f.negate) this._obj = r.value;
    return this;
  });
  method(['ownProperty', 'haveOwnProperty'], function (name, val) {
    this._f.own = true;
    return arguments.length > 1 ? this.property(name, val) : this.property(name);
  });
  method(['match', 'matches'], function (re, msg) {
    if (msg) this._f.msg = msg;
    return check(this, re.test(this._obj), 'expected ' + inspect(this._obj) + ' to match ' + re, 'expected ' + inspect(this._obj) + ' not to match ' + re);
  });
  method(['string'], function (s) {
    return check(this, String(this._obj).indexOf(s) >= 0, 'expected ' + inspect(this._obj) + ' to contain ' + inspect(s), 'expected ' + inspect(this._obj) + ' to not contain ' + inspect(s));
  });
  method(['oneOf'], function (list, msg) {
    if (msg) this._f.msg = msg;
    var o = this._obj, deep = this._f.deep;
    var ok = list.some(function (x) { return deep ? deepEqual(x, o) : x === o; });
    return check(this, ok, 'expected ' + inspect(o) + ' to be one of ' + inspect(list), 'expected ' + inspect(o) + ' to not be one of ' + inspect(list));
  });
  method(['instanceOf', 'instanceof'], function (C) {
    return check(this, this._obj instanceof C, 'expected ' + inspect(this._obj) + ' to be an instance of ' + (C && C.name), 'expected ' + inspect(this._obj) + ' to not be an instance of ' + (C && C.name));
  });
  method(['keys', 'key'], function () {
    var want = Array.prototype.slice.call(arguments);
    if (want.length === 1 && Array.isArray(want[0])) want = want[0];
    else if (want.length === 1 && want[0] && typeof want[0] === 'object') want = Object.keys(want[0]);
    var have = Object.keys(this._obj || {});
    var ok = this._f.any
      ? want.some(function (k) { return have.indexOf(k) >= 0; })
      : want.every(function (k) { return have.indexOf(k) >= 0; }) && (this._f.contains || want.length === have.length);
    return check(this, ok, 'expected ' + inspect(this._obj) + ' to have keys ' + inspect(want), 'expected ' + inspect(this._obj) + ' to not have keys ' + inspect(want));
  });
  method(['members'], function (list) {
    var o = this._obj, deep = this._f.deep;
    var has = function (x) { return o.some(function (y) { return deep ? deepEqual(x, y) : x === y; }); };
    var ok = list.every(has) && (this._f.contains || list.length === o.length);
    return check(this, ok, 'expected ' + inspect(o) + ' to have the same members as ' + inspect(list), 'expected ' + inspect(o) + ' to not have the same members as ' + inspect(list));
  });
  method(['satisfy', 'satisfies'], function (fn) {
    return check(this, !!fn(this._obj), 'expected ' + inspect(this._obj) + ' to satisfy ' + inspect(fn), 'expected ' + inspect(this._obj) + ' to not satisfy ' + inspect(fn));
  });
  method(['throw', 'throws', 'Throw'], function (want) {
    var threw = false, err;
    try { this._obj(); } catch (e) { threw = true; err = e; }
    var ok = threw && (want === undefined || (want instanceof RegExp ? want.test(String(err && err.message)) : typeof want === 'string' ? String(err && err.message).indexOf(want) >= 0 : err instanceof want));
    return check(this, ok, 'expected ' + inspect(this._obj) + ' to throw' + (want ? ' ' + inspect(want) : ''), 'expected ' + inspect(this._obj) + ' to not throw');
  });
  // `include.keys` / `include.members` mean "at least these".
  var baseInclude = Object.getOwnPropertyDescriptor(P, 'include').get;
  ['include', 'includes', 'contain', 'contains'].forEach(function (n) {
    Object.defineProperty(P, n, {
      get: function () { this._f.contains = true; return baseInclude.call(this); },
      configurable: true
    });
  });

  // Response assertions, as Postman's chai plugin has them.
  method(['status'], function (want) {
    var r = isResponse(this);
    if (typeof want === 'number') {
      return check(this, r.code === want, 'expected response to have status code ' + want + ' but got ' + r.code, 'expected response to not have status code ' + want);
    }
    return check(this, r.status === want, 'expected response to have status reason ' + inspect(want) + ' but got ' + inspect(r.status), 'expected response to not have status reason ' + inspect(want));
  });
  method(['header'], function (name, value) {
    // chai-postman asserts headers of requests too (`pm.request.to.have.header`).
    var r = this._obj && this._obj.headers instanceof HeaderList ? this._obj : isResponse(this);
    var ror = r instanceof Response ? 'response' : 'request';
    var actual = r.headers.get(name);
    if (arguments.length < 2) {
      return check(this, actual !== undefined, 'expected ' + ror + ' to have header with key ' + inspect(name), 'expected ' + ror + ' to not have header with key ' + inspect(name));
    }
    return check(this, actual === value, 'expected ' + ror + ' header ' + inspect(name) + ' to be ' + inspect(value) + ' but got ' + inspect(actual), 'expected ' + ror + ' header ' + inspect(name) + ' to not be ' + inspect(value));
  });
  // chai-postman's type checks: `pm.request` is the request, a reply of the
  // run or of pm.sendRequest a response.
  function isRequestObj(o) { return o !== undefined && o === request; }
  prop('postmanRequest', function () {
    return check(this, isRequestObj(this._obj), 'expecting a postman request object but got ' + inspect(this._obj), 'not expecting a postman request object');
  });
  prop('postmanResponse', function () {
    return check(this, this._obj instanceof Response, 'expecting a postman response object but got ' + inspect(this._obj), 'not expecting a postman response object');
  });
  prop('postmanRequestOrResponse', function () {
    return check(this, isRequestObj(this._obj) || this._obj instanceof Response, 'expecting a postman request or response object but got ' + inspect(this._obj), 'not expecting a postman request or response object');
  });
  method(['statusCode', 'code'], function (want) {
    var r = isResponse(this);
    return check(this, r.code === Number(want), 'expected response to have status code ' + Number(want) + ' but got ' + r.code, 'expected response to not have status code ' + r.code);
  });
  method(['statusReason'], function (want) {
    var r = isResponse(this);
    return check(this, r.status === String(want), 'expected response to have status reason ' + inspect(String(want)) + ' but got ' + inspect(r.status), 'expected response to not have status reason ' + inspect(r.status));
  });
  method(['statusCodeClass'], function (want) {
    var c = isResponse(this).code;
    return check(this, Math.floor(c / 100) === want, 'expected response code to be ' + want + 'XX but found ' + c, 'expected response code to not be ' + want + 'XX');
  });
  method(['body'], function (want) {
    var r = isResponse(this), b = r.text();
    if (arguments.length === 0) return check(this, b.length > 0, 'expected response to have a body', 'expected response to not have a body');
    if (want instanceof RegExp) return check(this, want.test(b), 'expected response body to match ' + want, 'expected response body to not match ' + want);
    if (typeof want === 'string') return check(this, b === want, 'expected response body to equal ' + inspect(want), 'expected response body to not equal ' + inspect(want));
    var j; try { j = JSON.parse(b); } catch (e) { j = undefined; }
    return check(this, deepEqual(j, want), 'expected response body json to equal ' + inspect(want) + ' but got ' + inspect(j), 'expected response body json to not equal ' + inspect(want));
  });
  method(['jsonBody'], function (path, value) {
    var r = isResponse(this), j;
    try { j = JSON.parse(r.text()); } catch (e) {
      return check(this, false, 'expected response body to be a valid json but got error ' + e.message, 'expected response body not to be a valid json');
    }
    if (arguments.length === 0) return check(this, true, '', 'expected response body not to be a valid json');
    if (typeof path === 'object' && path !== null) {
      return check(this, deepEqual(j, path), 'expected response body json to equal ' + inspect(path) + ' but got ' + inspect(j), 'expected response body json to not equal ' + inspect(path));
    }
    var g = getPath(j, path);
    if (arguments.length === 1) return check(this, g.found, 'expected ' + inspect(j) + ' to have property ' + inspect(path), 'expected ' + inspect(j) + ' to not have property ' + inspect(path));
    return check(this, g.found && deepEqual(g.value, value), 'expected ' + inspect(j) + ' to have property ' + inspect(path) + ' of ' + inspect(value) + (g.found ? ', but got ' + inspect(g.value) : ''), 'expected ' + inspect(j) + ' to not have property ' + inspect(path) + ' of ' + inspect(value));
  });
  // chai-postman's jsonSchema: ajv (the vendored one) over the value, or over
  // a response's JSON body, with its messages.
  method(['jsonSchema'], function (schema, options) {
    var data = this._obj;
    if (data instanceof Response) {
      try { data = JSON.parse(data.text()); } catch (e) { data = undefined; }
    }
    var Ajv = lib('ajv'), ajv = new Ajv(Object.assign({ allErrors: true, logger: false }, options || {}));
    var valid = ajv.validate(schema, data);
    return check(this, valid, 'expected data to satisfy schema but found following errors: \n' + ajv.errorsText(), 'expected data to not satisfy schema');
  });
  method(['responseTime'], function () { return unsupported('pm.response.to.have.responseTime'); });
  prop('json', function () {
    var r = isResponse(this), ok = true;
    try { JSON.parse(r.text()); } catch (e) { ok = false; }
    return check(this, ok, 'expected response body to be valid JSON', 'expected response body not to be valid JSON');
  });
  prop('withBody', function () { var r = isResponse(this); return check(this, r.text().length > 0, 'expected response to have content in body', 'expected response to not have content in body'); });
  function statusClass(name, lo, hi, label) {
    prop(name, function () {
      var c = isResponse(this).code;
      return check(this, c >= lo && c <= hi, 'expected response code to be ' + label + ' but found ' + c, 'expected response code to not be ' + label + ' but found ' + c);
    });
  }
  statusClass('info', 100, 199, '1XX');
  statusClass('success', 200, 299, '2XX');
  statusClass('redirection', 300, 399, '3XX');
  statusClass('clientError', 400, 499, '4XX');
  statusClass('serverError', 500, 599, '5XX');
  statusClass('error', 400, 599, '4XX or 5XX');
  statusClass('accepted', 202, 202, '202');
  statusClass('badRequest', 400, 400, '400');
  statusClass('unauthorized', 401, 401, '401');
  statusClass('unauthorised', 401, 401, '401');
  statusClass('forbidden', 403, 403, '403');
  statusClass('notFound', 404, 404, '404');
  statusClass('rateLimited', 429, 429, '429');
  statusClass('withoutContent', 204, 204, '204');
  statusClass('notAcceptable', 406, 406, '406');

  // ---------------------------------------------------------------- pm
  var index = 0;
  function test(name, fn) {
    // 'running' until the callback returns: a script stopped by a limit
    // inside the callback must not leave the test looking passed.
    var rec = { name: String(name), status: 'running', index: index++, ms: 0 };
    out.tests.push(rec);
    if (typeof fn !== 'function') { rec.status = 'skip'; return pm; }
    var t0 = __now();
    var fail = function (e) {
      var info = errInfo(e);
      rec.status = info.name === 'UnsupportedError' ? 'error' : 'fail';
      rec.error = info;
    };
    try {
      var r;
      if (fn.length > 0) {
        // The `done` style: an error passed to done fails the test.
        r = fn(function (err) { if (err) fail(err); });
      } else {
        r = fn();
      }
      if (rec.status === 'running') rec.status = 'pass';
      if (r && typeof r.then === 'function') r.then(null, fail);
    } catch (e) {
      fail(e);
    }
    rec.ms = __now() - t0;
    return pm;
  }
  test.skip = function (name) { out.tests.push({ name: String(name), status: 'skip', index: index++, ms: 0 }); return pm; };

  function UrlObj(s) { this._s = String(s); }
  UrlObj.prototype.toString = function () { return this._s; };
  UrlObj.prototype.toJSON = function () { return this._s; };
  UrlObj.prototype.getHost = function () { var m = /^[a-z]+:\/\/([^/:?#]*)/i.exec(this._s); return m ? m[1] : ''; };
  UrlObj.prototype.getPath = function () { var m = /^(?:[a-z]+:\/\/[^/?#]*)?([^?#]*)/i.exec(this._s); return m && m[1] ? m[1] : '/'; };
  UrlObj.prototype.getQueryString = function () { var i = this._s.indexOf('?'); return i < 0 ? '' : this._s.slice(i + 1).split('#')[0]; };

  var req = input.request;
  if (req.body && typeof req.body === 'object') {
    Object.defineProperty(req.body, 'toString', { value: function () { return this.raw === undefined ? '' : String(this.raw); } });
  }
  var request = {
    url: new UrlObj(req.url),
    method: req.method,
    headers: new HeaderList(req.headers),
    body: req.body,
    name: input.info.requestName,
    addHeader: function (h) { this.headers.add(h); },
    removeHeader: function (n) { this.headers.remove(n); },
    upsertHeader: function (h) { this.headers.upsert(h); }
  };
  Object.defineProperty(request, 'to', { get: function () { return new Assertion(request).to; } });
  Object.defineProperty(request, 'auth', { get: function () { return unsupported('pm.request.auth'); } });

  var response = input.response ? new Response(input.response) : undefined;

  // ---------------------------------------------------------------- sendRequest
  // The request goes out when called (the script's thread waits for it, the
  // time limit paused); the callback or promise settles after the script's own
  // code, as in postman-sandbox. Variables are not resolved, no auth applied;
  // the run's cookie jar is used.
  var sendNative = global.__send;
  delete global.__send;
  function pairList(v) {
    if (!v) return [];
    if (Array.isArray(v)) {
      return v.filter(function (h) { return h && !h.disabled; }).map(function (h) {
        if (typeof h === 'string') { var i = h.indexOf(':'); return [h.slice(0, i).trim(), h.slice(i + 1).trim()]; }
        return [String(h.key), text(h.value)];
      });
    }
    if (typeof v === 'string') {
      return v.split('\n').filter(function (l) { return l.indexOf(':') > 0; }).map(function (l) {
        var i = l.indexOf(':'); return [l.slice(0, i).trim(), l.slice(i + 1).trim()];
      });
    }
    if (v instanceof HeaderList) return v.all().map(function (h) { return [h.key, text(h.value)]; });
    return Object.keys(v).map(function (k) { return [k, text(v[k])]; });
  }
  function scriptRequest(req) {
    if (typeof req === 'string') return { url: req, method: 'GET', headers: [], body: { mode: 'none' } };
    var url = req.url;
    if (url && typeof url === 'object' && !(url instanceof UrlObj)) {
      url = url.raw || ((url.protocol ? url.protocol + '://' : '') + [].concat(url.host || []).join('.') + (url.port ? ':' + url.port : '') + '/' + [].concat(url.path || []).join('/'));
    }
    var body = { mode: 'none' }, b = req.body;
    if (b && typeof b === 'object') {
      if (b.mode === 'raw') body = { mode: 'raw', raw: text(b.raw) };
      else if (b.mode === 'urlencoded') body = { mode: 'urlencoded', pairs: pairList(b.urlencoded) };
      else if (b.mode === 'formdata') body = { mode: 'formdata', pairs: pairList(b.formdata) };
      else if (b.mode === 'graphql') body = { mode: 'raw', raw: JSON.stringify(b.graphql || {}) };
      else if (b.mode) unsupported('pm.sendRequest body mode ' + b.mode);
    } else if (typeof b === 'string') {
      body = { mode: 'raw', raw: b };
    }
    return { url: String(url), method: String(req.method || 'GET'), headers: pairList(req.header || req.headers), body: body };
  }
  function sendRequest(req, callback) {
    var settled;
    if (!sendNative) unsupported('pm.sendRequest');
    if (!req) {
      settled = Promise.reject(new Error('sendrequest: nothing to request'));
    } else {
      var r = parse(sendNative(stringify(scriptRequest(req))));
      if (r.error !== undefined) {
        var e = new Error(r.error);
        settled = Promise.reject(e);
      } else {
        settled = Promise.resolve(new Response(r.response));
      }
    }
    if (typeof callback === 'function') {
      settled.then(function (res) { callback.call(pm, null, res); })
        .catch(function (err) { callback.call(pm, err); })
        .catch(function (err) { if (!out.thrown) out.thrown = errInfo(err); });
      return pm;
    }
    return settled;
  }

  function setNext(name) { out.next = { set: true, name: name === null || name === undefined ? null : String(name) }; }

  var pm = {
    test: test,
    expect: function (v, msg) { return new Assertion(v, msg); },
    environment: scopes.environment,
    collectionVariables: scopes.collection,
    globals: scopes.globals,
    variables: variables,
    iterationData: {
      get: function (k) { return scopes.data.get(k); },
      has: function (k) { return scopes.data.has(k); },
      toObject: function () { return scopes.data.toObject(); },
      toJSON: function () { return scopes.data.toJSON(); },
      unset: function (k) { scopes.data.unset(k); }
    },
    request: request,
    info: input.info,
    iteration: input.info.iteration,
    execution: {
      setNextRequest: setNext,
      skipRequest: function () {
        if (input.kind !== 'prerequest') unsupported('pm.execution.skipRequest outside a pre-request script');
        out.skip = true;
      },
      location: input.location
    },
    sendRequest: sendRequest,
    // Newman shows no visualizations: the template is checked as Postman
    // checks it and then dropped.
    visualizer: {
      set: function (template, data) {
        if (typeof template !== 'string') throw new Error('Invalid template. Template must be of type string, found ' + typeof template);
        if (data && typeof data !== 'object') throw new Error('Invalid data. Data must be an object, found ' + typeof data);
      },
      clear: function () {}
    },
    // A pre-request script has no reply: its list is empty, its jar() works.
    cookies: new CookieList(response ? input.response.cookies : []),
    vault: missing('pm.vault'),
    require: function (m) { return unsupported("pm.require('" + m + "')"); }
  };
  if (response) pm.response = response;
  else Object.defineProperty(pm, 'response', { get: function () { return unsupported('pm.response in a pre-request script'); } });

  // ---------------------------------------------------------------- console
  function log(level) {
    return function () {
      var line = Array.prototype.map.call(arguments, function (a) { return typeof a === 'string' ? a : inspect(a); }).join(' ');
      out.console.push(level === 'log' ? line : level + ': ' + line);
    };
  }
  global.console = { log: log('log'), info: log('info'), warn: log('warn'), error: log('error'), debug: log('debug') };

  // ---------------------------------------------------------------- legacy API
  // The pre-`pm` API as postman-sandbox's legacy interface has it: the
  // `environment` and `globals` objects are snapshots that the `postman.*`
  // setters keep in step, and those setters store values as text.
  var legacyTests = {};
  var legacyEnv = scopes.environment.toObject();
  var legacyGlobals = scopes.globals.toObject();
  function legacyValue(v) {
    // postman-sandbox's exact rule: truthy values (and `false`, whose
    // `false && …` is not a function, so it stays a boolean) with a
    // `toString` become text; 0, '', null, undefined and NaN stay as they are.
    if ((v === false || v) && typeof (v && v.toString) === 'function') return v.toString();
    return v;
  }
  function legacySet(scope, mirror) {
    return function (k, v) { v = legacyValue(v); mirror[k] = v; scope.set(k, v); };
  }
  function legacyUnset(scope, mirror) {
    return function (k) { if (k) delete mirror[k]; scope.unset(k); };
  }
  function legacyClear(scope, mirror) {
    return function () { Object.keys(mirror).forEach(function (k) { delete mirror[k]; }); scope.clear(); };
  }
  var postman = {
    setEnvironmentVariable: legacySet(scopes.environment, legacyEnv),
    getEnvironmentVariable: function (k) { return scopes.environment.get(k); },
    clearEnvironmentVariable: legacyUnset(scopes.environment, legacyEnv),
    clearEnvironmentVariables: legacyClear(scopes.environment, legacyEnv),
    setGlobalVariable: legacySet(scopes.globals, legacyGlobals),
    getGlobalVariable: function (k) { return scopes.globals.get(k); },
    clearGlobalVariable: legacyUnset(scopes.globals, legacyGlobals),
    clearGlobalVariables: legacyClear(scopes.globals, legacyGlobals),
    setNextRequest: setNext
  };
  if (response) {
    // Only test scripts have these, as in postman-sandbox.
    postman.getResponseHeader = function (n) { return response.headers.get(n); };
    postman.getResponseCookie = function (name) { return pm.cookies.one(name); };
  }

  // Sugar.js, which the Postman sandbox loads, gives every string `has`;
  // legacy scripts use it as `responseBody.has("text")`. Only this method of
  // Sugar is provided; its search treats a string literally and a RegExp as
  // a pattern.
  Object.defineProperty(String.prototype, 'has', {
    value: function (find) {
      var re = find instanceof RegExp ? find : String(find).replace(/[\\/'*+?|()\[\]{}.^$]/g, '\\$&');
      return String(this).search(re) !== -1;
    },
    writable: true,
    configurable: true
  });

  global.pm = pm;
  global.postman = postman;
  global.tests = legacyTests;
  global.environment = legacyEnv;
  global.globals = legacyGlobals;
  global.data = scopes.data.toObject();
  global.iteration = input.info.iteration;
  global.request = { url: req.url, method: req.method, headers: request.headers.toObject(), data: req.body && req.body.raw, name: input.info.requestName, description: req.description === null ? undefined : req.description };
  if (response) {
    global.responseBody = response.text();
    global.responseCode = { code: response.code, name: response.status, detail: response.status, standardName: response.status };
    global.responseTime = response.responseTime;
    // Header names arrive lower-cased from the HTTP stack, where Newman keeps
    // the server's spelling: lookups ignore case so `responseHeaders['Content-Type']`
    // reads the same either way.
    global.responseHeaders = new Proxy(response.headers.toObject(), {
      get: function (t, p) {
        if (typeof p !== 'string' || Object.prototype.hasOwnProperty.call(t, p)) return t[p];
        var k = Object.keys(t).find(function (x) { return x.toLowerCase() === p.toLowerCase(); });
        return k === undefined ? t[p] : t[k];
      },
      has: function (t, p) {
        return typeof p === 'string' ? Object.keys(t).some(function (x) { return x.toLowerCase() === p.toLowerCase(); }) : p in t;
      }
    });
    global.responseCookies = pm.cookies.all();
  }
  global.btoa = function (s) {
    var c = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', o = '';
    s = String(s);
    for (var i = 0; i < s.length; i += 3) {
      var a = s.charCodeAt(i), b = s.charCodeAt(i + 1), d = s.charCodeAt(i + 2);
      if (a > 255 || b > 255 || d > 255) throw new Error('btoa: character out of range');
      var n = (a << 16) | ((b || 0) << 8) | (d || 0);
      o += c[(n >> 18) & 63] + c[(n >> 12) & 63] + (i + 1 < s.length ? c[(n >> 6) & 63] : '=') + (i + 2 < s.length ? c[n & 63] : '=');
    }
    return o;
  };
  global.atob = function (s) {
    var c = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/', o = '', bits = 0, n = 0;
    s = String(s).replace(/[\s=]/g, '');
    for (var i = 0; i < s.length; i++) {
      var v = c.indexOf(s[i]);
      if (v < 0) throw new Error('atob: invalid character');
      n = (n << 6) | v; bits += 6;
      if (bits >= 8) { bits -= 8; o += String.fromCharCode((n >> bits) & 255); }
    }
    return o;
  };
  // No timers in the sandbox: a callback runs once the script's own code is
  // done, which keeps the order of effects of the common "defer" use.
  global.setTimeout = function (fn) {
    var args = Array.prototype.slice.call(arguments, 2);
    Promise.resolve().then(function () { fn.apply(undefined, args); });
    return 0;
  };
  global.setImmediate = global.setTimeout;
  global.clearTimeout = global.clearImmediate = function () {};
  // ---------------------------------------------------------------- libraries
  // What postman-sandbox lets scripts `require`, and the legacy globals it
  // sets, from the real packages (libs.rs). A library is loaded the first
  // time a script touches it, so scripts that use none pay nothing.
  var loadLib = global.__lib;
  delete global.__lib;
  var libs = {}, loading = 0;
  function lib(name) {
    if (!Object.prototype.hasOwnProperty.call(libs, name)) {
      loading++;
      try { libs[name] = loadLib(name); } finally { loading--; }
    }
    return libs[name];
  }
  var requirable = {
    lodash: function () { return lib('lodash'); },
    'crypto-js': function () { return lib('crypto-js'); },
    moment: function () { return lib('moment'); },
    tv4: function () { return lib('tv4'); },
    ajv: function () { return lib('ajv'); },
    chai: function () { return lib('chai'); },
    xml2js: function () { return lib('xml2js'); },
    cheerio: function () { return lib('cheerio'); },
    'csv-parse/lib/sync': function () { return lib('csv-parse/lib/sync'); },
    uuid: function () { return lib('uuid'); },
    atob: function () { return global.atob; },
    btoa: function () { return global.btoa; }
  };
  // Postman has these too (Node's built-ins as browserify shims them, and its
  // own collection SDK); here they are named as missing rather than "not found".
  var absent = ['path', 'assert', 'buffer', 'util', 'url', 'punycode', 'querystring', 'string_decoder',
    'stream', 'timers', 'events', 'postman-collection', 'backbone', 'liquid-json'];
  global.require = function (m) {
    var name = String(m);
    if (Object.prototype.hasOwnProperty.call(requirable, name)) return requirable[name]();
    if (absent.indexOf(name) >= 0) return unsupported("require('" + name + "')");
    var e = new Error("Cannot find module '" + name + "'");
    e.code = 'MODULE_NOT_FOUND';
    throw e;
  };
  // A global that loads its library on first read; a script may also assign
  // or declare the name (`var _ = require('lodash')`) without loading it.
  function lazyGlobal(name, get) {
    Object.defineProperty(global, name, {
      get: function () {
        // A library looking for an earlier copy of itself (lodash's `root._`,
        // kept for noConflict) must not load another library.
        if (loading) return undefined;
        var v = get();
        Object.defineProperty(global, name, { value: v, writable: true, configurable: true, enumerable: false });
        return v;
      },
      set: function (v) {
        Object.defineProperty(global, name, { value: v, writable: true, configurable: true, enumerable: true });
      },
      configurable: true,
      enumerable: false
    });
  }
  // The legacy sandbox's globals: lodash 3 as `_` (noConflict, as postman-sandbox has it).
  lazyGlobal('_', function () { return lib('lodash3'); });
  lazyGlobal('CryptoJS', function () { return lib('crypto-js'); });
  lazyGlobal('tv4', function () { return lib('tv4'); });
  lazyGlobal('cheerio', function () { return lib('cheerio'); });
  // postman-sandbox's xml2Json: xml2js with these options, run synchronously.
  global.xml2Json = function (string) {
    var result = {};
    lib('xml2js').parseString(string, { explicitArray: false, async: false, trim: true, mergeAttrs: false }, function (_err, r) {
      result = r;
    });
    return result;
  };
  global.Backbone = missing('Backbone');

  global.__errinfo = function (e) { return JSON.stringify(errInfo(e)); };

  function safe(v) {
    try {
      var s = stringify(v);
      return s === undefined ? null : parse(s);
    } catch (e) {
      return String(v);
    }
  }
  function pairs(scope) {
    var a = [];
    scope._m.forEach(function (v, k) { a.push([k, safe(v)]); });
    return a;
  }
  global.__output = function () {
    Object.keys(legacyTests).forEach(function (k) {
      var ok = !!legacyTests[k];
      var rec = { name: k, status: ok ? 'pass' : 'fail', index: index++, ms: 0 };
      // postman-sandbox's message, with String() of the value.
      if (!ok) rec.error = { name: 'AssertionError', message: 'expected ' + String(legacyTests[k]) + ' to be truthy', unsupported: null };
      out.tests.push(rec);
    });
    return stringify({
      vars: {
        globals: pairs(scopes.globals),
        collection: pairs(scopes.collection),
        environment: pairs(scopes.environment),
        data: pairs(scopes.data),
        local: pairs(scopes.local)
      },
      tests: out.tests,
      console: out.console,
      unsupported: out.unsupported,
      headers: request.headers._h,
      next: out.next,
      skip: out.skip,
      thrown: out.thrown || null
    });
  };
})(globalThis);
