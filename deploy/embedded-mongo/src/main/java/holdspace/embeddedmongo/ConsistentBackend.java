package holdspace.embeddedmongo;

import java.time.Clock;
import java.util.Collection;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Supplier;

import org.h2.mvstore.MVStore;

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoDatabase;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.QueryResult;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.wire.message.MongoMessage;
import de.bwaldvogel.mongo.wire.message.MongoQuery;
import io.netty.channel.Channel;

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
 * <p>With an MVStore, whatever a command changed is committed to the file before its
 * reply is returned (and so before the client hears "ok"), and never half of it.
 *
 * <p>Writes filtered by {@code _id} and more are planned by {@link IdFirstPlanner}.
 */
final class ConsistentBackend implements MongoBackend {

    /** Commands that only read; anything else runs alone. */
    private static final Set<String> READS = Set.of(
        "find", "getmore", "count", "distinct", "aggregate", "listcollections", "listindexes",
        "listdatabases", "dbstats", "collstats", "ping", "ismaster", "hello", "buildinfo",
        "serverstatus", "whatsmyuri", "getlasterror", "getparameter", "connectionstatus",
        "endsessions", "killcursors", "getlog", "hostinfo", "getcmdlineopts");

    private final MongoBackend inner;
    private final MVStore store; // null: nothing to commit (memory)
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private final IdFirstPlanner planner = new IdFirstPlanner();
    private final Object commits = new Object();
    private long mutations; // writes done; changed under the write lock
    private long committed; // writes known to be on the file; guarded by commits
    private boolean committing; // guarded by commits

    ConsistentBackend(MongoBackend inner, MVStore store) {
        this.inner = inner;
        this.store = store;
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
        // Legacy OP_QUERY: drivers use it only for their first handshake.
        long mine;
        QueryResult result;
        lock.writeLock().lock();
        try {
            List<Document> copies = inner.handleQuery(query).collectDocuments().stream()
                .map(Document::cloneDeeply).toList();
            result = new QueryResult(copies);
        } finally {
            mine = ++mutations;
            lock.writeLock().unlock();
        }
        awaitCommit(mine);
        return result;
    }

    private Document guarded(String database, String command, Document body, Supplier<Document> run) {
        String name = command.toLowerCase(Locale.ROOT);
        boolean read = READS.contains(name);
        Lock held = read ? lock.readLock() : lock.writeLock();
        long mine = 0;
        Document reply;
        held.lock();
        try {
            planner.plan(inner, database, name, body);
            reply = run.get();
            if (reply != null && name.equals("serverstatus")) {
                withScannedObjects(reply);
            }
            reply = reply == null ? null : reply.cloneDeeply();
        } finally {
            if (!read) {
                mine = ++mutations;
            }
            held.unlock();
        }
        if (!read) {
            awaitCommit(mine);
        }
        return reply;
    }

    private void withScannedObjects(Document status) {
        Document metrics = (Document) status.computeIfAbsent("metrics", k -> new Document());
        Document executor = (Document) metrics.computeIfAbsent("queryExecutor", k -> new Document());
        executor.put("scannedObjects", planner.scannedObjects());
    }

    /**
     * Returns once a commit covering this process's mutation number {@code mine} is on
     * the file (at once for the memory store).
     *
     * <p>A commit runs holding the write lock, so it never takes half of a write (a
     * document without its index entry). Writers that finished while one commit ran
     * share the next: one of them commits, the others wait for it.
     */
    private void awaitCommit(long mine) {
        if (store == null) {
            return;
        }
        synchronized (commits) {
            while (committed < mine && committing) {
                waitForCommit();
            }
            if (committed >= mine) {
                return;
            }
            committing = true;
        }
        long upTo = mine;
        try {
            lock.writeLock().lock();
            try {
                upTo = mutations;
                if (store.hasUnsavedChanges()) {
                    store.commit();
                }
            } finally {
                lock.writeLock().unlock();
            }
        } finally {
            synchronized (commits) {
                committed = Math.max(committed, upTo);
                committing = false;
                commits.notifyAll();
            }
        }
    }

    private void waitForCommit() {
        try {
            commits.wait();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for a commit", e);
        }
    }

    @Override
    public void dropDatabase(String database) {
        long mine;
        lock.writeLock().lock();
        try {
            inner.dropDatabase(database);
        } finally {
            mine = ++mutations;
            lock.writeLock().unlock();
        }
        awaitCommit(mine);
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
