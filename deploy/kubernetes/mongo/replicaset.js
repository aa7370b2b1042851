// Run by the mongo-init Job (mongo.yaml) as the administrator, on mongo-0 directly:
// initiates the replica set rs0 with the StatefulSet's three members once, then waits
// until the set has a primary. On a set already initiated it changes nothing.
const members = [
  { _id: 0, host: "mongo-0.mongo:27017" },
  { _id: 1, host: "mongo-1.mongo:27017" },
  { _id: 2, host: "mongo-2.mongo:27017" },
];
let initiated = true;
try {
  rs.status();
} catch (e) {
  if (e.codeName !== "NotYetInitialized") {
    throw e;
  }
  initiated = false;
}
if (initiated) {
  print("mongo-init: rs0 is initiated already");
} else {
  rs.initiate({ _id: "rs0", members });
  print(`mongo-init: initiated rs0 with ${members.map((m) => m.host).join(", ")}`);
}
for (let waited = 0; ; waited++) {
  const hello = db.hello();
  if (hello.primary) {
    print(`mongo-init: the primary is ${hello.primary}`);
    break;
  }
  if (waited >= 120) {
    print("mongo-init: no primary after 120 s");
    quit(1);
  }
  sleep(1000);
}
