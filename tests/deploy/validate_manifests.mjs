// Validates rendered Kubernetes manifests offline, without a cluster, in two
// passes that both come from the published OpenAPI schemas:
//
//  1. kubernetes-models / @kubernetes-models/prometheus-operator: JSON-schema
//     validators compiled from the Kubernetes OpenAPI document and the
//     prometheus-operator CRDs (types, required fields, enums, formats).
//  2. TypeScript over the same packages' generated type declarations, with
//     every object as a typed literal: excess-property checks reject unknown
//     fields (a misspelt `readinesProbe`), as `kubectl apply` with strict
//     field validation would. JSON schema alone lets them through.
//
// LeaderWorkerSet has no published model: its own fields are checked against
// tests/deploy/leaderworkerset.ts (written from the LWS v1 API reference) and
// its pod templates, plain core/v1 PodTemplateSpecs, by both passes.
//
// Any other kind is an error: a new kind in the chart needs a schema here.
//
//   node validate_manifests.mjs --node-modules DIR [--out-json FILE] MANIFEST.yaml...
//
// Exit status 0 when every document is valid, 1 otherwise (each problem on
// stderr), 2 for bad arguments. --out-json writes {file: [documents]}.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

// apiVersion/kind -> [module under node_modules, TypeScript interface].
const MODELS = {
  "v1/ConfigMap": ["kubernetes-models/v1/ConfigMap", "IConfigMap"],
  "v1/Service": ["kubernetes-models/v1/Service", "IService"],
  "v1/ServiceAccount": ["kubernetes-models/v1/ServiceAccount", "IServiceAccount"],
  "v1/Secret": ["kubernetes-models/v1/Secret", "ISecret"],
  "networking.k8s.io/v1/NetworkPolicy": ["kubernetes-models/networking.k8s.io/v1/NetworkPolicy", "INetworkPolicy"],
  "apps/v1/Deployment": ["kubernetes-models/apps/v1/Deployment", "IDeployment"],
  "apps/v1/StatefulSet": ["kubernetes-models/apps/v1/StatefulSet", "IStatefulSet"],
  "policy/v1/PodDisruptionBudget": ["kubernetes-models/policy/v1/PodDisruptionBudget", "IPodDisruptionBudget"],
  "monitoring.coreos.com/v1/ServiceMonitor": [
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor", "IServiceMonitor"],
  "monitoring.coreos.com/v1/PodMonitor": [
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor", "IPodMonitor"],
  "monitoring.coreos.com/v1/PrometheusRule": [
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule", "IPrometheusRule"],
};
const LWS = "leaderworkerset.x-k8s.io/v1/LeaderWorkerSet";

function parseArgs(argv) {
  const args = { nodeModules: "", outJson: "", files: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--node-modules") args.nodeModules = argv[++i];
    else if (argv[i] === "--out-json") args.outJson = argv[++i];
    else if (argv[i].startsWith("--")) throw new Error(`unknown flag ${argv[i]}`);
    else args.files.push(argv[i]);
  }
  if (!args.nodeModules || args.files.length === 0) {
    throw new Error("usage: validate_manifests.mjs --node-modules DIR [--out-json FILE] MANIFEST.yaml...");
  }
  return args;
}

function describe(doc) {
  return `${doc.kind ?? "?"}/${doc.metadata?.name ?? "?"}`;
}

// The multi-document YAML of each file; duplicate keys and syntax errors fail.
function loadDocuments(YAML, file, problems) {
  const docs = [];
  for (const d of YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { uniqueKeys: true })) {
    for (const e of [...d.errors, ...d.warnings]) problems.push(`${file}: YAML: ${e.message}`);
    const value = d.toJS();
    if (value !== null && value !== undefined) docs.push(value);
  }
  return docs;
}

async function schemaPass(nodeModules, entries, problems) {
  const load = async (module) => import(pathToFileURL(path.join(nodeModules, `${module}.js`)).href);
  const { PodTemplateSpec } = await load("kubernetes-models/v1/PodTemplateSpec");
  for (const { file, index, doc, key } of entries) {
    const where = `${file}: document ${index} (${describe(doc)})`;
    try {
      if (key === LWS) {
        const t = doc.spec?.leaderWorkerTemplate ?? {};
        for (const name of ["leaderTemplate", "workerTemplate"]) {
          if (t[name] !== undefined) new PodTemplateSpec(t[name]).validate();
        }
      } else {
        const module = await load(MODELS[key][0]);
        const Model = module[doc.kind];
        new Model(doc).validate();
      }
    } catch (e) {
      problems.push(`${where}: schema: ${e.message}`);
    }
  }
}

// Writes every document as a typed literal and runs tsc once over all.
function typePass(nodeModules, entries, problems) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "moeserve-manifests-"));
  try {
    fs.symlinkSync(nodeModules, path.join(dir, "node_modules"), "dir");
    fs.copyFileSync(path.join(here, "leaderworkerset.ts"), path.join(dir, "leaderworkerset.ts"));
    const lines = [];
    const imports = new Set();
    for (const { key } of entries) {
      if (key === LWS) continue;
      const [module, type] = MODELS[key];
      imports.add(`import type { ${type} } from "${module}";`);
    }
    lines.push(...imports, 'import type { ILeaderWorkerSet } from "./leaderworkerset.js";', "");
    const owner = [];  // line number (1-based) -> entry
    for (const e of entries) {
      const type = e.key === LWS ? "ILeaderWorkerSet" : MODELS[e.key][1];
      const body = JSON.stringify(e.doc, null, 2).split("\n");
      body[0] = `export const doc${lines.length}: ${type} = ${body[0]}`;
      body[body.length - 1] += ";";
      for (const l of body) {
        lines.push(l);
        owner[lines.length] = e;
      }
    }
    fs.writeFileSync(path.join(dir, "check.ts"), lines.join("\n") + "\n");
    fs.writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify({
      compilerOptions: {
        strict: true, noEmit: true, skipLibCheck: true, types: [],
        module: "nodenext", moduleResolution: "nodenext", target: "es2022",
      },
      files: ["check.ts"],
    }));
    const tsc = path.join(nodeModules, "typescript", "bin", "tsc");
    try {
      execFileSync(process.execPath, [tsc, "-p", dir], { cwd: dir, encoding: "utf8" });
    } catch (e) {
      const out = `${e.stdout ?? ""}${e.stderr ?? ""}`;
      let reported = 0;
      for (const m of out.matchAll(/^(\S+)\((\d+),(\d+)\): error (TS\d+): (.*)$/gm)) {
        const line = Number(m[2]);
        const entry = owner[line];
        const where = entry
          ? `${entry.file}: document ${entry.index} (${describe(entry.doc)})`
          : `${m[1]}:${line}`;
        problems.push(`${where}: unknown field or wrong type near \`${(lines[line - 1] ?? "").trim()}\`: ${m[5]}`);
        reported++;
      }
      if (reported === 0) problems.push(`tsc failed: ${out || e.message}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(e.message);
    return 2;
  }
  const nodeModules = path.resolve(args.nodeModules);
  const YAML = createRequire(path.join(nodeModules, "noop.js"))("yaml");
  const problems = [];
  const entries = [];
  const byFile = {};
  for (const file of args.files) {
    const docs = loadDocuments(YAML, file, problems);
    byFile[file] = docs;
    docs.forEach((doc, index) => {
      const key = `${doc.apiVersion}/${doc.kind}`;
      if (key !== LWS && !(key in MODELS)) {
        problems.push(`${file}: document ${index} (${describe(doc)}): no schema for ${key}; add one to ${path.basename(fileURLToPath(import.meta.url))}`);
        return;
      }
      entries.push({ file, index, doc, key });
    });
  }
  await schemaPass(nodeModules, entries, problems);
  typePass(nodeModules, entries, problems);
  if (args.outJson) fs.writeFileSync(args.outJson, JSON.stringify(byFile));
  const kinds = {};
  for (const e of entries) kinds[e.key] = (kinds[e.key] ?? 0) + 1;
  console.log(`checked ${entries.length} documents from ${args.files.length} file(s): ` +
    Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(", "));
  if (kinds[LWS]) {
    console.log(`LeaderWorkerSet: its pod templates checked as core/v1 PodTemplateSpec, its own ` +
      `fields structurally (leaderworkerset.ts): LWS publishes no schema package`);
  }
  for (const p of problems) console.error(p);
  return problems.length === 0 ? 0 : 1;
}

process.exitCode = await main();
