/**
 * pgbroadcast-codegen, part 1: reads an OpenAPI 3.1 document and finds the
 * synced entities (`x-sync` on path items), grouped by broadcast channel.
 * Pure functions on plain JSON: no I/O, deterministic (sorted iteration).
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

/** A clear, user-facing error of the generator (the CLI prints its message without a stack). */
export class CodegenError extends Error {
  override name = 'CodegenError';
}

export interface SyncExtension {
  channel: string;
  events: string[];
  localFirst: boolean;
}

export interface PathParam {
  /** Name in the document (`item_id`). */
  name: string;
  /** Name in generated code (`itemId`). */
  ident: string;
  /** TypeScript type: `number`, `string` or `string | number`. */
  tsType: string;
}

export interface Operation {
  path: string;
  method: HttpMethod;
  operationId: string | undefined;
  /** camelCase function name in `<entity>Api`. */
  name: string;
  summary: string | undefined;
  pathParams: PathParam[];
  hasQuery: boolean;
  /** undefined: no JSON request body. */
  body: { tsType: string; required: boolean; properties: string[] | undefined } | undefined;
  /** Type of the JSON success body (`void` when there is none). */
  responseType: string;
  /** The success body is `{ data }` only: the function returns `data` (of type `dataType`). */
  unwrapData: boolean;
  dataType: string | undefined;
  /** The success body has a `txid` property (a mutation result). */
  hasTxid: boolean;
}

export interface Entity {
  channel: string;
  /** `Order` */
  typeName: string;
  /** `Orders` */
  pluralTypeName: string;
  /** `order` */
  camelName: string;
  events: string[];
  listPath: string;
  entityPath: string;
  /** Shape table for Electric: the list path's last segment. */
  table: string;
  /** The entity path's parameter. */
  idParam: PathParam;
  /** Property of the item holding its key. */
  keyProperty: string;
  /** Item properties whose schema is a named component (e.g. `status` → `OrderStatus`), sorted. */
  refProperties: string[];
  itemType: string;
  detailType: string;
  listEnvelope: boolean;
  detailEnvelope: boolean;
  list: Operation;
  show: Operation;
  create: Operation | undefined;
  update: Operation | undefined;
  remove: Operation | undefined;
  operations: Operation[];
}

export interface SyncModel {
  title: string;
  version: string;
  entities: Entity[];
}

// ------------------------------------------------------------------ helpers

function isObject(x: unknown): x is JsonObject {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function words(s: string): string[] {
  return s
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .split(/[^A-Za-z0-9]+/)
    .filter((w) => w.length > 0);
}

export function pascalCase(s: string): string {
  const out = words(s)
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join('');
  return /^[0-9]/.test(out) ? `_${out}` : out;
}

export function camelCase(s: string): string {
  const p = pascalCase(s);
  return p.startsWith('_') ? p : p.charAt(0).toLowerCase() + p.slice(1);
}

/** Simple English plural of the last word: order → orders, category → categories, box → boxes. */
export function plural(s: string): string {
  if (/[^aeiou]y$/i.test(s)) return `${s.slice(0, -1)}ies`;
  if (/(s|x|z|ch|sh)$/i.test(s)) return `${s}es`;
  return `${s}s`;
}

/** A single-quoted TypeScript string literal. */
export function sq(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

function str(x: Json | undefined): string {
  return JSON.stringify(x);
}

/** Canonical JSON (sorted keys) for structural comparison. */
function canonical(x: Json | undefined): string {
  if (Array.isArray(x)) return `[${x.map(canonical).join(',')}]`;
  if (isObject(x)) {
    return `{${Object.keys(x)
      .filter((k) => k !== 'description' && k !== 'title' && k !== 'example' && k !== 'examples')
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(x[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(x ?? null);
}

class Doc {
  readonly componentByShape = new Map<string, string>();
  constructor(readonly root: JsonObject) {
    const schemas = this.componentSchemas();
    for (const name of Object.keys(schemas).sort()) {
      const key = canonical(schemas[name]);
      if (!this.componentByShape.has(key)) this.componentByShape.set(key, name);
    }
  }

  componentSchemas(): JsonObject {
    const c = this.root.components;
    return isObject(c) && isObject(c.schemas) ? c.schemas : {};
  }

  /** Follows local `$ref`s (`#/...`). */
  resolve(node: Json | undefined, seen = new Set<string>()): Json | undefined {
    if (!isObject(node) || typeof node.$ref !== 'string') return node;
    const ref = node.$ref;
    if (!ref.startsWith('#/')) throw new CodegenError(`only local $refs are supported, found ${str(ref)}`);
    if (seen.has(ref)) throw new CodegenError(`circular $ref ${ref}`);
    seen.add(ref);
    let cur: Json | undefined = this.root;
    for (const raw of ref.slice(2).split('/')) {
      const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
      cur = isObject(cur) ? cur[part] : undefined;
    }
    if (cur === undefined) throw new CodegenError(`unresolved $ref ${ref}`);
    return this.resolve(cur, seen);
  }

  /** Resolved schema with `allOf` members' properties merged (shallow). */
  objectProperties(node: Json | undefined): { properties: JsonObject; required: string[] } | undefined {
    const s = this.resolve(node);
    if (!isObject(s)) return undefined;
    const properties: JsonObject = {};
    const required: string[] = [];
    let found = false;
    if (isObject(s.properties)) {
      found = true;
      Object.assign(properties, s.properties);
    }
    if (Array.isArray(s.required)) for (const r of s.required) if (typeof r === 'string') required.push(r);
    if (Array.isArray(s.allOf)) {
      for (const member of s.allOf) {
        const m = this.objectProperties(member);
        if (m) {
          found = true;
          Object.assign(properties, m.properties);
          required.push(...m.required);
        }
      }
    }
    return found ? { properties, required } : undefined;
  }

  isArray(node: Json | undefined): Json | undefined {
    const s = this.resolve(node);
    if (!isObject(s)) return undefined;
    const t = s.type;
    if (t === 'array' || (Array.isArray(t) && t.includes('array'))) return s.items ?? {};
    return undefined;
  }

  /** A TypeScript expression for `node`: a named component when it is (or equals) one, else `fallback`. */
  typeOf(node: Json | undefined, fallback: string): string {
    if (isObject(node) && typeof node.$ref === 'string') {
      const m = /^#\/components\/schemas\/([^/]+)$/.exec(node.$ref);
      if (m) return `components['schemas'][${sq(m[1]!.replace(/~1/g, '/').replace(/~0/g, '~'))}]`;
    }
    const named = this.componentByShape.get(canonical(node));
    if (named !== undefined && isObject(node) && Object.keys(node).length > 0) {
      return `components['schemas'][${sq(named)}]`;
    }
    return fallback;
  }
}

function parseSync(path: string, item: JsonObject): SyncExtension | undefined {
  const x = item['x-sync'];
  if (x === undefined) return undefined;
  if (!isObject(x)) throw new CodegenError(`${path}: x-sync must be an object`);
  const b = x.broadcast;
  if (!isObject(b) || typeof b.channel !== 'string' || b.channel === '') {
    throw new CodegenError(`${path}: x-sync.broadcast.channel (a non-empty string) is required`);
  }
  const events = Array.isArray(b.events) ? b.events.filter((e): e is string => typeof e === 'string') : [];
  return { channel: b.channel, events, localFirst: x.local_first === true };
}

function paramTsType(doc: Doc, schema: Json | undefined): string {
  const s = doc.resolve(schema);
  const t = isObject(s) ? s.type : undefined;
  const types = Array.isArray(t) ? t : [t];
  if (types.includes('integer') || types.includes('number')) return 'number';
  if (types.includes('string')) return 'string';
  return 'string | number';
}

function successResponse(doc: Doc, op: JsonObject): { code: string; schema: Json | undefined } | undefined {
  const responses = doc.resolve(op.responses);
  if (!isObject(responses)) return undefined;
  const codes = Object.keys(responses)
    .filter((c) => /^2[0-9X][0-9X]$/.test(c))
    .sort();
  for (const code of codes) {
    const r = doc.resolve(responses[code]);
    const content = isObject(r) ? r.content : undefined;
    const media = isObject(content) ? content['application/json'] : undefined;
    if (isObject(media)) return { code, schema: media.schema ?? {} };
  }
  return codes.length > 0 ? { code: codes[0]!, schema: undefined } : undefined;
}

function opName(method: HttpMethod, path: string, operationId: string | undefined): string {
  if (operationId !== undefined && words(operationId).length > 0) return camelCase(operationId);
  const parts = path.split('/').filter((p) => p !== '');
  const fixed = parts.filter((p) => !p.startsWith('{')).map(pascalCase);
  const params = parts.filter((p) => p.startsWith('{')).map((p) => pascalCase(p.slice(1, -1)));
  return camelCase(method) + fixed.join('') + (params.length ? `By${params.join('And')}` : '');
}

function buildOperation(doc: Doc, path: string, item: JsonObject, method: HttpMethod, op: JsonObject): Operation {
  const operationId = typeof op.operationId === 'string' ? op.operationId : undefined;
  const opExpr = `paths[${sq(path)}][${sq(method)}]`;
  const params = new Map<string, JsonObject>();
  for (const list of [item.parameters, op.parameters]) {
    if (!Array.isArray(list)) continue;
    for (const raw of list) {
      const p = doc.resolve(raw);
      if (isObject(p) && typeof p.name === 'string' && typeof p.in === 'string') params.set(`${p.in}:${p.name}`, p);
    }
  }
  const pathParams: PathParam[] = [];
  for (const m of path.matchAll(/\{([^}]+)\}/g)) {
    const name = m[1]!;
    const p = params.get(`path:${name}`);
    pathParams.push({ name, ident: camelCase(name) || 'param', tsType: paramTsType(doc, p?.schema) });
  }
  const hasQuery = [...params.keys()].some((k) => k.startsWith('query:'));

  let body: Operation['body'];
  const rb = doc.resolve(op.requestBody);
  if (isObject(rb) && isObject(rb.content) && isObject(rb.content['application/json'])) {
    const schema = (rb.content['application/json'] as JsonObject).schema;
    const props = doc.objectProperties(schema);
    body = {
      tsType: doc.typeOf(schema, `NonNullable<${opExpr}['requestBody']>['content']['application/json']`),
      required: rb.required === true,
      properties: props ? Object.keys(props.properties) : undefined,
    };
  }

  const success = successResponse(doc, op);
  let responseType = 'void';
  let unwrapData = false;
  let dataType: string | undefined;
  let hasTxid = false;
  if (success && success.schema !== undefined) {
    const bodyExpr = `${opExpr}['responses'][${/^[0-9]+$/.test(success.code) ? success.code : sq(success.code)}]['content']['application/json']`;
    responseType = doc.typeOf(success.schema, bodyExpr);
    const props = doc.objectProperties(success.schema);
    if (props && 'data' in props.properties) {
      const keys = Object.keys(props.properties);
      hasTxid = 'txid' in props.properties;
      dataType = doc.typeOf(props.properties.data, `${responseType}['data']`);
      unwrapData = keys.length === 1;
    }
  }

  return {
    path,
    method,
    operationId,
    name: opName(method, path, operationId),
    summary: typeof op.summary === 'string' ? op.summary : undefined,
    pathParams,
    hasQuery,
    body,
    responseType,
    unwrapData,
    dataType,
    hasTxid,
  };
}

/** The item type of a list GET, when its success body is an array or `{ data: array }`. */
function listItem(doc: Doc, path: string, op: JsonObject): { itemType: string; envelope: boolean; itemSchema: Json } | undefined {
  const success = successResponse(doc, op);
  if (!success || success.schema === undefined) return undefined;
  const bodyExpr = `paths[${sq(path)}]['get']['responses'][${success.code}]['content']['application/json']`;
  const direct = doc.isArray(success.schema);
  if (direct !== undefined) {
    const arr = doc.typeOf(success.schema, bodyExpr);
    return { itemType: doc.typeOf(direct, `${arr}[number]`), envelope: false, itemSchema: direct };
  }
  const props = doc.objectProperties(success.schema);
  const data = props?.properties.data;
  const items = doc.isArray(data);
  if (props && items !== undefined) {
    const env = doc.typeOf(success.schema, bodyExpr);
    const arr = doc.typeOf(data, `${env}['data']`);
    return { itemType: doc.typeOf(items, `${arr}[number]`), envelope: true, itemSchema: items };
  }
  return undefined;
}

// ---------------------------------------------------------------- discovery

/** Finds the synced entities of `document`; throws a `CodegenError` with a clear message when it cannot. */
export function buildModel(document: unknown): SyncModel {
  if (!isObject(document as Json)) throw new CodegenError('the document is not a JSON object');
  const root = document as JsonObject;
  if (typeof root.openapi !== 'string' || !root.openapi.startsWith('3.')) {
    throw new CodegenError(`not an OpenAPI 3.x document (openapi: ${str(root.openapi)})`);
  }
  const info = isObject(root.info) ? root.info : {};
  const title = typeof info.title === 'string' ? info.title : 'untitled';
  const version = typeof info.version === 'string' ? info.version : '0';
  const doc = new Doc(root);
  const paths = isObject(root.paths) ? root.paths : {};

  const byChannel = new Map<string, { path: string; item: JsonObject; sync: SyncExtension }[]>();
  for (const path of Object.keys(paths).sort()) {
    const item = doc.resolve(paths[path]);
    if (!isObject(item)) continue;
    const sync = parseSync(path, item);
    if (!sync) continue;
    let list = byChannel.get(sync.channel);
    if (!list) byChannel.set(sync.channel, (list = []));
    list.push({ path, item, sync });
  }
  if (byChannel.size === 0) {
    throw new CodegenError(
      `"${title}" has no path item with x-sync: nothing to generate (mark synced path items with "x-sync": {"broadcast": {"channel": "...", "events": [...]}})`,
    );
  }

  const entities: Entity[] = [];
  const seenNames = new Map<string, string>();
  for (const channel of [...byChannel.keys()].sort()) {
    const items = byChannel.get(channel)!;
    const typeName = pascalCase(channel);
    const camelName = camelCase(channel);
    if (typeName === '') throw new CodegenError(`channel ${str(channel)} gives no usable TypeScript name`);
    const clash = seenNames.get(typeName);
    if (clash !== undefined) throw new CodegenError(`channels ${str(clash)} and ${str(channel)} both give the name ${typeName}`);
    seenNames.set(typeName, channel);

    const lists = items
      .filter(({ item }) => isObject(item.get))
      .map(({ path, item }) => ({ path, found: listItem(doc, path, item.get as JsonObject) }))
      .filter((x) => x.found !== undefined)
      .sort((a, b) => a.path.length - b.path.length || (a.path < b.path ? -1 : 1));
    const listEntry = lists[0];
    if (!listEntry) {
      throw new CodegenError(
        `channel ${str(channel)} has no list path: none of its synced paths (${items.map((i) => i.path).join(', ')}) has a GET answering an array (or {"data": [...]})`,
      );
    }
    const listPath = listEntry.path;
    const entityItem = items.find(({ path }) => /^\{[^}/]+\}$/.test(path.slice(listPath.length + 1)) && path.startsWith(`${listPath}/`));
    if (!entityItem || !isObject(entityItem.item.get)) {
      throw new CodegenError(
        `channel ${str(channel)} has no entity path: expected a synced path ${listPath}/{id} with a GET answering one item`,
      );
    }
    const entityPath = entityItem.path;

    const operations: Operation[] = [];
    for (const { path, item } of items) {
      for (const method of HTTP_METHODS) {
        const op = item[method];
        if (isObject(op)) operations.push(buildOperation(doc, path, item, method, op));
      }
    }
    const used = new Map<string, number>();
    for (const op of operations) {
      const n = (used.get(op.name) ?? 0) + 1;
      used.set(op.name, n);
      if (n > 1) op.name = `${op.name}${n}`;
    }
    const find = (path: string, ...methods: HttpMethod[]) =>
      methods.map((m) => operations.find((o) => o.path === path && o.method === m)).find((o) => o !== undefined);
    const list = find(listPath, 'get')!;
    const show = find(entityPath, 'get')!;
    const detailType = show.unwrapData ? show.dataType! : show.responseType;
    if (detailType === 'void') throw new CodegenError(`${entityPath}: GET has no JSON success response`);
    const idParam = show.pathParams[show.pathParams.length - 1]!;
    const itemProps = doc.objectProperties(listEntry.found!.itemSchema)?.properties ?? {};
    const keyProperty = idParam.name in itemProps ? idParam.name : 'id' in itemProps ? 'id' : undefined;
    if (keyProperty === undefined) {
      throw new CodegenError(`channel ${str(channel)}: the list item has neither a ${str(idParam.name)} nor an "id" property to key it by`);
    }
    const segments = listPath.split('/').filter((s) => s !== '');
    const update = find(entityPath, 'patch', 'put');
    entities.push({
      channel,
      typeName,
      pluralTypeName: plural(typeName),
      camelName,
      events: [...new Set(items.flatMap((i) => i.sync.events))].sort(),
      listPath,
      entityPath,
      table: segments[segments.length - 1]!,
      idParam,
      keyProperty,
      refProperties: Object.keys(itemProps)
        .filter((k) => isObject(itemProps[k]) && typeof (itemProps[k] as JsonObject).$ref === 'string' && pascalCase(k) !== '')
        .sort(),
      itemType: listEntry.found!.itemType,
      detailType,
      listEnvelope: listEntry.found!.envelope,
      detailEnvelope: show.unwrapData,
      list,
      show,
      create: find(listPath, 'post'),
      update: update?.body ? update : undefined,
      remove: find(entityPath, 'delete'),
      operations,
    });
  }
  return { title, version, entities };
}
