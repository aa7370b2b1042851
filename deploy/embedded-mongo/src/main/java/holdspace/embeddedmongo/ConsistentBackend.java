package holdspace.embeddedmongo;

import java.io.IOException;
import java.time.Clock;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Supplier;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.QueryResult;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.wire.message.MongoMessage;
import de.bwaldvogel.mongo.wire.message.MongoQuery;
import io.netty.channel.Channel;
import io.netty.channel.embedded.EmbeddedChannel;

/**
 * A mongo-java-server backend whose replies are snapshots and whose acknowledged
 * writes are on disk.
 *
 * <p>Why: the stock backends update documents in place and put the live objects in
 * their replies, which netty encodes after the collection's lock is released. A read
 * racing a write could then encode half of each (two winners of one conditional
 * findAndModify were each handed the same post-image in tests/compat). Here a write
 * runs alone, reads run together, and every reply is deep-copied before the lock is
 * released, so each document a client receives is one the server really held, as
 * on MongoDB.
 *
 * <p>With a {@link Journal}, every command that may have changed the data is appended
 * to it, in the order applied (writes run alone), before its reply is returned.
 *
 * <p>Writes filtered by {@code _id} and more are planned by {@link IdFirstPlanner}.
 */
final class ConsistentBackend implements MongoBackend {

    private static final Logger log = LoggerFactory.getLogger(ConsistentBackend.class);

    /** Commands that only read; anything else runs alone. */
    private static final Set<String> READS = Set.of(
        "find", "getmore", "count", "distinct", "aggregate", "listcollections", "listindexes",
        "listdatabases", "dbstats", "collstats", "ping", "ismaster", "hello", "buildinfo",
        "serverstatus", "whatsmyuri", "getlasterror", "getparameter", "connectionstatus",
        "endsessions", "killcursors", "getlog", "hostinfo", "getcmdlineopts");

    private final MongoBackend inner;
    private final Journal journal; // null: nothing kept (the memory store)
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private final IdFirstPlanner planner = new IdFirstPlanner();
    // Replay and snapshots run commands with no client: the backend wants a channel.
    private final Channel internal = new EmbeddedChannel();

    ConsistentBackend(MongoBackend inner, Journal journal) {
        this.inner = inner;
        this.journal = journal;
    }

    /** Rebuilds the data from the journal, then starts it afresh from a snapshot. */
    long recover() throws IOException {
        if (journal == null) {
            return 0;
        }
        journal.lock();
        long replayed = journal.replay((database, command) -> {
            try {
                inner.handleCommand(internal, database, command.keySet().iterator().next(), command);
            } catch (RuntimeException e) {
                // It failed the same way when first applied (a duplicate key, say):
                // what it did before failing is what it does now.
            }
        });
        journal.rewrite(snapshot());
        return replayed;
    }

    @Override
    public Document handleCommand(Channel channel, String database, String command, Document query) {
        return guarded(database, command, query, () -> inner.handleCommand(channel, database, command, query));
    }

    @Override
    public Document handleMessage(MongoMessage message) {
        Document body = message.getDocument();
        String command = body.keySet().iterator().next();
        return guarded(message.getDatabaseName(), command, body, () -> inner.handleMessage(message));
    }

    @Override
    public QueryResult handleQuery(MongoQuery query) {
        // Legacy OP_QUERY: drivers use it only for their first handshake (isMaster).
        lock.readLock().lock();
        try {
            List<Document> copies = inner.handleQuery(query).collectDocuments().stream()
                .map(Document::cloneDeeply).toList();
            return new QueryResult(copies);
        } finally {
            lock.readLock().unlock();
        }
    }

    private Document guarded(String database, String command, Document body, Supplier<Document> run) {
        String name = command.toLowerCase(Locale.ROOT);
        boolean read = READS.contains(name);
        Lock held = read ? lock.readLock() : lock.writeLock();
        held.lock();
        try {
            planner.plan(inner, database, name, body);
            Document reply = null;
            try {
                reply = run.get();
            } finally {
                if (!read) {
                    // Failed or not: replaying it does the same.
                    keep(database, withUpsertedIds(name, body, reply));
                }
            }
            if (reply != null && name.equals("serverstatus")) {
                withScannedObjects(reply);
            }
            return reply == null ? null : reply.cloneDeeply();
        } finally {
            held.unlock();
        }
    }

    /** The command goes to the journal before its reply goes to the client. */
    private void keep(String database, Document command) {
        if (journal == null) {
            return;
        }
        try {
            journal.append(database, command);
            if (journal.wantsCompaction()) {
                journal.rewrite(snapshot());
            }
        } catch (IOException e) {
            // Not kept means not acknowledged: the client gets an error, and the server
            // stops rather than run on with data it cannot keep.
            log.error("cannot write the journal; stopping", e);
            Runtime.getRuntime().halt(3);
        }
    }

    /**
     * The command as it is to be replayed: an upsert whose filter named no {@code _id}
     * got one from the server, which a replay would not give again, so the filter of
     * what is kept names it.
     */
    @SuppressWarnings("unchecked")
    static Document withUpsertedIds(String command, Document body, Document reply) {
        if (reply == null) {
            return body;
        }
        if (command.equals("update") && reply.get("upserted") instanceof List<?> upserted) {
            List<Document> statements = (List<Document>) body.get("updates");
            for (Document entry : (List<Document>) upserted) {
                Document statement = statements.get(((Number) entry.get("index")).intValue());
                ((Document) statement.get("q")).putIfAbsent("_id", entry.get("_id"));
            }
        } else if (command.equals("findandmodify") && body.get("query") instanceof Document query
            && reply.get("value") instanceof Document value && value.containsKey("_id")) {
            // The document found or made; an upsert that returned nothing (new: false)
            // keeps its server-made id only until the next start (Holdspace upserts by _id).
            query.putIfAbsent("_id", value.get("_id"));
        }
        return body;
    }

    /** Every collection's indexes and documents, as the commands that recreate them. */
    @SuppressWarnings("unchecked")
    private List<Journal.Record> snapshot() {
        List<Journal.Record> out = new ArrayList<>();
        Document databases = inner.handleCommand(internal, "admin", "listDatabases",
            new Document("listDatabases", 1));
        for (Document entry : (List<Document>) databases.get("databases")) {
            String database = (String) entry.get("name");
            if (database.equals("admin") || database.equals("local")) {
                continue;
            }
            MongoDatabase db = inner.resolveDatabase(database);
            Document collections = inner.handleCommand(internal, database, "listCollections",
                new Document("listCollections", 1));
            for (Document info : firstBatch(collections)) {
                String name = (String) info.get("name");
                if (name.startsWith("system.")) {
                    continue;
                }
                Document indexes = inner.handleCommand(internal, database, "listIndexes",
                    new Document("listIndexes", name));
                List<Document> secondary = new ArrayList<>();
                for (Document index : firstBatch(indexes)) {
                    if (!"_id_".equals(index.get("name"))) {
                        secondary.add(index);
                    }
                }
                out.add(new Journal.Record(database, secondary.isEmpty()
                    ? new Document("create", name)
                    : new Document("createIndexes", name).append("indexes", secondary)));
                MongoCollection<?> collection = db.resolveCollection(name, false);
                if (collection != null) {
                    out.addAll(Journal.batches(database, name, collection.handleQuery(new Document())));
                }
            }
        }
        return out;
    }

    @SuppressWarnings("unchecked")
    private static List<Document> firstBatch(Document reply) {
        return (List<Document>) ((Document) reply.get("cursor")).get("firstBatch");
    }

    private void withScannedObjects(Document status) {
        Document metrics = (Document) status.computeIfAbsent("metrics", k -> new Document());
        Document executor = (Document) metrics.computeIfAbsent("queryExecutor", k -> new Document());
        executor.put("scannedObjects", planner.scannedObjects());
    }

    @Override
    public void dropDatabase(String database) {
        lock.writeLock().lock();
        try {
            inner.dropDatabase(database);
            keep(database, new Document("dropDatabase", 1));
        } finally {
            lock.writeLock().unlock();
        }
    }

    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            inner.close();
        } finally {
            lock.writeLock().unlock();
        }
    }

    @Override
    public void handleClose(Channel channel) {
        inner.handleClose(channel);
    }

    @Override
    public Collection<Document> getCurrentOperations(MongoQuery query) {
        return inner.getCurrentOperations(query);
    }

    @Override
    public Document getServerStatus() {
        return inner.getServerStatus();
    }

    @Override
    public void closeCursors(List<Long> cursorIds) {
        inner.closeCursors(cursorIds);
    }

    @Override
    public Clock getClock() {
        return inner.getClock();
    }

    @Override
    public void enableOplog() {
        inner.enableOplog();
    }

    @Override
    public void disableOplog() {
        inner.disableOplog();
    }

    @Override
    public MongoDatabase resolveDatabase(String database) {
        return inner.resolveDatabase(database);
    }

    @Override
    public MongoBackend version(MongoVersion version) {
        inner.version(version);
        return this;
    }
}
