// A node-opcua server for tests/opcua_second: a second OPC UA stack beside the simulator's
// asyncua servers, with the variables whose behaviour depends on the server stack.
//
//   node server.js --port 4840 --status FILE --pki DIR --epoch SECONDS [--lifetime-s 120]
//
// Builds its address space (about a second), appends "initialized <t>" to FILE, then waits
// for the line "listen" on stdin; then it listens on opc.tcp://127.0.0.1:PORT/ (security
// None, anonymous) and appends "listening <t> <pid> <endpoint>" (t: epoch seconds). So a
// test can prepare a restarted server while the old one still runs, and choose the
// downtime. Every variable's NodeId is ns=<urn:tieragent:second>;s=Factory/<path>:
//
//   Big/U64Max, Big/U64TopBit   UInt64 2^64-1 and 2^63
//   Big/I64Min, Big/I64Max      Int64 -2^63 and 2^63-1
//   Still/State, Still/Good, Still/Reject, Still/Auto
//                               a machine whose values never change: state 1, good 1234,
//                               reject 5, auto true
//                               (Big/* and Still/* last changed at EPOCH - 700 s)
//   Clock/Old                   21.5, last changed at EPOCH - 7200 s (unchanged for 2 h)
//   Clock/Behind                +1 every 0.5 s, stamped by a source clock 2 h behind
//   Moving/Count                +1 every 0.2 s, stamped now
//
// EPOCH is the same for every start of one test, so a restarted server serves the same
// unchanged values with the same timestamps, as a device that restarted would.
//
// It exits by itself when its parent process dies (stdin closes or the parent PID changes)
// and after --lifetime-s seconds at most. SIGTERM shuts it down gracefully; the tests use
// SIGKILL for a crash.
"use strict";

// Node.js 18 (Debian 12's nodejs) has WebCrypto only as require("crypto").webcrypto.
if (!globalThis.crypto) globalThis.crypto = require("crypto").webcrypto;

const fs = require("fs");
const path = require("path");
const {
    OPCUAServer,
    OPCUACertificateManager,
    DataType,
    Variant,
    VariantArrayType,
    StatusCodes,
    MessageSecurityMode,
    SecurityPolicy,
} = require("node-opcua");

const NS_URI = "urn:tieragent:second";

function options(argv) {
    const out = { lifetimeS: 120 };
    for (let i = 2; i < argv.length; i += 2) {
        const [name, value] = [argv[i], argv[i + 1]];
        if (value === undefined) throw new Error(`${name} needs a value`);
        if (name === "--port") out.port = Number(value);
        else if (name === "--status") out.status = value;
        else if (name === "--pki") out.pki = value;
        else if (name === "--epoch") out.epoch = Number(value);
        else if (name === "--lifetime-s") out.lifetimeS = Number(value);
        else throw new Error(`unknown option ${name}`);
    }
    for (const key of ["port", "status", "pki", "epoch"]) {
        if (out[key] === undefined || Number.isNaN(out[key])) throw new Error(`--${key} is missing`);
    }
    return out;
}

function watchParent(lifetimeS, onLine) {
    // Bounded life, whatever happens to the test that started it.
    setTimeout(() => process.exit(3), lifetimeS * 1000).unref();
    const parent = process.ppid;
    setInterval(() => {
        if (process.ppid !== parent) process.exit(2);
    }, 250).unref();
    let pending = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (chunk) => {
        pending += chunk;
        let end;
        while ((end = pending.indexOf("\n")) >= 0) {
            onLine(pending.slice(0, end).trim());
            pending = pending.slice(end + 1);
        }
    });
    process.stdin.on("end", () => process.exit(2));
    process.stdin.on("error", () => process.exit(2));
}

async function main() {
    const opts = options(process.argv);
    const status = (word, detail = "") =>
        fs.appendFileSync(opts.status, `${word} ${Date.now() / 1000}${detail}\n`);
    let listen;
    const listening = new Promise((resolve) => { listen = resolve; });
    watchParent(opts.lifetimeS, (line) => { if (line === "listen") listen(); });
    fs.mkdirSync(opts.pki, { recursive: true });
    const server = new OPCUAServer({
        port: opts.port,
        hostname: "127.0.0.1",
        alternateHostname: ["127.0.0.1"],
        resourcePath: "/",
        allowAnonymous: true,
        securityModes: [MessageSecurityMode.None],
        securityPolicies: [SecurityPolicy.None],
        serverCertificateManager: new OPCUACertificateManager({
            automaticallyAcceptUnknownCertificate: true,
            rootFolder: path.join(opts.pki, "pki"),
        }),
        buildInfo: { productName: "tieragent second OPC UA server (node-opcua)" },
    });
    await server.initialize();

    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace(NS_URI);
    const folders = new Map();
    folders.set("", ns.addFolder(addressSpace.rootFolder.objects, {
        browseName: "Factory", nodeId: "s=Factory",
    }));
    const epoch = new Date(opts.epoch * 1000);
    const ago = (seconds) => new Date(epoch.getTime() - seconds * 1000);

    function variable(itemPath, dataType, value, sourceTimestamp) {
        const parts = itemPath.split("/");
        let parent = "";
        for (const part of parts.slice(0, -1)) {
            const here = parent ? `${parent}/${part}` : part;
            if (!folders.has(here)) {
                folders.set(here, ns.addFolder(folders.get(parent), {
                    browseName: part, nodeId: `s=Factory/${here}`,
                }));
            }
            parent = here;
        }
        const node = ns.addVariable({
            componentOf: folders.get(parent),
            browseName: parts[parts.length - 1],
            nodeId: `s=Factory/${itemPath}`,
            dataType: DataType[dataType],
            minimumSamplingInterval: 0, // report every change (exception based)
        });
        const set = (v, ts) => node.setValueFromSource(
            new Variant({
                dataType: DataType[dataType], arrayType: VariantArrayType.Scalar, value: v,
            }), StatusCodes.Good, ts,
        );
        set(value, sourceTimestamp);
        return set;
    }

    // node-opcua keeps 64-bit integers as [high 32 bits, low 32 bits].
    variable("Big/U64Max", "UInt64", [0xffffffff, 0xffffffff], ago(700));
    variable("Big/U64TopBit", "UInt64", [0x80000000, 0], ago(700));
    variable("Big/I64Min", "Int64", [0x80000000, 0], ago(700));
    variable("Big/I64Max", "Int64", [0x7fffffff, 0xffffffff], ago(700));
    variable("Still/State", "Int32", 1, ago(700));
    variable("Still/Good", "UInt32", 1234, ago(700));
    variable("Still/Reject", "UInt32", 5, ago(700));
    variable("Still/Auto", "Boolean", true, ago(700));
    variable("Clock/Old", "Double", 21.5, ago(7200));
    let behind = 0;
    const setBehind = variable("Clock/Behind", "UInt32", behind, new Date(Date.now() - 7200e3));
    let moving = 0;
    const setMoving = variable("Moving/Count", "UInt32", moving, new Date());
    setInterval(() => setBehind(++behind, new Date(Date.now() - 7200e3)), 500);
    setInterval(() => setMoving(++moving, new Date()), 200);

    let stopping = false;
    process.on("SIGTERM", async () => {
        if (stopping) return;
        stopping = true;
        setTimeout(() => process.exit(1), 3000).unref();
        try {
            await server.shutdown(0);
        } finally {
            process.exit(0);
        }
    });

    status("initialized");
    await listening;
    await server.start();
    // When it accepts sessions, for the tests' resume times.
    status("listening", ` ${process.pid} ${server.getEndpointUrl()}`);
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
