// Prints [seed, value, version, hash] vectors for ids outside ASCII,
// computed the way GrowthBook's JavaScript SDK does (FNV-1a over UTF-16
// code units from charCodeAt).
function fnv1a32(str) {
  let h = 0x811c9dc5;
  for (let i = 0; i < str.length; i++) {
    h ^= str.charCodeAt(i);
    h = Math.imul(h, 16777619) >>> 0;
  }
  return h >>> 0;
}
function hash(seed, value, version) {
  if (version === 1) return (fnv1a32(value + seed) % 1000) / 1000;
  return (fnv1a32(fnv1a32(seed + value) + "") % 10000) / 10000;
}
const ids = ["café", "Zoë", "用户-42", "ユーザー", "😀", "a😀b", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "мой-id", "عربي", "x\u0301"];
const seeds = ["", "exp-ü", "checkout"];
const out = [];
for (const seed of seeds) for (const id of ids) for (const v of [1, 2]) out.push([seed, id, v, hash(seed, id, v)]);
console.log(JSON.stringify(out, null, 1));
