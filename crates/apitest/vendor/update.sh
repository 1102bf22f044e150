#!/bin/sh
# Rebuilds the vendored sandbox libraries from the npm registry, at the
# versions postman-sandbox 6.7 pins (its package.json and package-lock.json).
# Needs node and npm. Usage: crates/apitest/vendor/update.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --silent --no-audit --no-fund \
  lodash@4.18.1 lodash3@3.10.2 crypto-js@3.3.0 moment@2.30.1 tv4@1.3.0 ajv@6.12.5 \
  chai@4.4.1 xml2js@0.6.2 cheerio@0.22.0 csv-parse@1.2.4 browserify@17.0.1 terser@5.51.4
m=node_modules
bin=$m/.bin
put() { # put <dir> <file> <source> [licence file]
  mkdir -p "$here/$1"
  cp "$3" "$here/$1/$2"
  if [ $# -ge 4 ]; then cp "$4" "$here/$1/"; fi
}
min() { "$bin/terser" "$1" -c -m -o "$2"; }
put lodash lodash.min.js $m/lodash/lodash.min.js $m/lodash/LICENSE
min $m/lodash3/index.js lodash3.min.js && put lodash3 lodash3.min.js lodash3.min.js $m/lodash3/LICENSE
min $m/crypto-js/crypto-js.js crypto-js.min.js && put crypto-js crypto-js.min.js crypto-js.min.js $m/crypto-js/LICENSE
put moment moment.min.js $m/moment/min/moment.min.js $m/moment/LICENSE
min $m/tv4/tv4.js tv4.min.js && put tv4 tv4.min.js tv4.min.js $m/tv4/LICENSE.txt
put ajv ajv.min.js $m/ajv/dist/ajv.min.js $m/ajv/LICENSE
min $m/chai/chai.js chai.min.js && put chai chai.min.js chai.min.js $m/chai/LICENSE
# Node-style packages: bundled with browserify's shims of the Node built-ins
# they use (events, stream, buffer, timers), as postman-sandbox bundles them.
# Each bundle's LICENSES holds the licence of every package inside it.
cat > licences.js <<'JS'
const fs = require('fs'), path = require('path');
const list = fs.readFileSync(process.argv[2], 'utf8').trim().split('\n');
const dirs = new Map();
for (const f of list) {
  const i = f.lastIndexOf('node_modules/');
  if (i < 0) continue;
  const rest = f.slice(i + 13).split('/');
  const name = rest[0].startsWith('@') ? rest[0] + '/' + rest[1] : rest[0];
  dirs.set(f.slice(0, i + 13) + name, name);
}
let out = 'Licences of the packages bundled (browserify, terser) into this directory\'s library.\n';
for (const [d, name] of [...dirs].sort((a, b) => a[1].localeCompare(b[1]))) {
  const pkg = JSON.parse(fs.readFileSync(path.join(d, 'package.json')));
  const lic = fs.readdirSync(d).find(n => /^(licen[sc]e|copying)/i.test(n));
  const declared = typeof pkg.license === 'string' ? pkg.license : JSON.stringify(pkg.license || pkg.licenses);
  out += '\n' + '='.repeat(72) + '\n' + pkg.name + '@' + pkg.version + ' (' + declared + ')\n' + '='.repeat(72) + '\n';
  out += lic ? fs.readFileSync(path.join(d, lic), 'utf8') : '(the package has no licence file; its package.json declares the licence above)\n';
}
process.stdout.write(out);
JS
bundle() { # bundle <dir> <standalone name> <entry> <output>
  "$bin/browserify" -s "$2" "$3" -o "$1.js"
  "$bin/browserify" --list "$3" > "$1.list"
  min "$1.js" "$4"
  node licences.js "$1.list" > LICENSES
  put "$1" "$4" "$4" LICENSES
}
bundle xml2js xml2js $m/xml2js/lib/xml2js.js xml2js.min.js
bundle cheerio cheerio $m/cheerio/index.js cheerio.min.js
bundle csv-parse csvparse $m/csv-parse/lib/sync.js csv-parse-sync.min.js
# `require('uuid')` in postman-sandbox is its own small lib/vendor/uuid.js
# (Apache-2.0), copied as is from github.com/postmanlabs/postman-sandbox 6.7.2;
# update.sh leaves uuid/ alone.
