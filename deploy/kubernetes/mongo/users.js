// One MongoDB user per Holdspace service: readWrite on its own database only, defined
// in that database (the service's MONGODB_URL says authSource=holdspace_<service>).
// docker-compose.yml's one-shot `mongo-users` job runs this as the administrator at
// every start: a missing user is created, an existing one gets the password from the
// environment again (so changing MONGO_<SERVICE>_PASSWORD and restarting rotates it).
const services = ["registration", "consent", "payments", "notifications", "progress", "web"];
for (const service of services) {
  const variable = `MONGO_${service.toUpperCase()}_PASSWORD`;
  const password = process.env[variable];
  if (!password) {
    print(`mongo-users: ${variable} is not set`);
    quit(2);
  }
  const database = db.getSiblingDB(`holdspace_${service}`);
  const roles = [{ role: "readWrite", db: `holdspace_${service}` }];
  if (database.getUser(service) === null) {
    database.createUser({ user: service, pwd: password, roles });
    print(`mongo-users: created ${service} on holdspace_${service}`);
  } else {
    database.updateUser(service, { pwd: password, roles });
    print(`mongo-users: updated ${service} on holdspace_${service}`);
  }
}
