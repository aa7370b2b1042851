package holdspace.embeddedmongo;

import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;

import de.bwaldvogel.mongo.MongoBackend;
import de.bwaldvogel.mongo.MongoCollection;
import de.bwaldvogel.mongo.backend.DefaultQueryMatcher;
import de.bwaldvogel.mongo.backend.QueryMatcher;
import de.bwaldvogel.mongo.bson.Document;

/**
 * Lets a write conditioned on {@code _id} and other fields use the {@code _id} index.
 *
 * <p>Why: mongo-java-server uses an index only when a filter names exactly the index's
 * fields, so {@code {_id: x, version: 7}} (every compare-and-set Holdspace does) made it
 * match every document of the collection: the cost of a write grew with the data.
 * MongoDB looks the document up by {@code _id} and checks the rest on it; so does this.
 *
 * <p>It runs while the caller holds the server's write lock, so the document checked is
 * the one the write will change. A single-document update, delete or findAndModify
 * (no upsert, no positional operator, no sort) is rewritten to filter by {@code _id}
 * alone when the document matches the whole filter, and by an empty {@code $in} (which
 * matches nothing, through the index) when it does not. Anything else runs unchanged.
 *
 * <p>It also keeps MongoDB's {@code metrics.queryExecutor.scannedObjects} for the
 * commands it sees, as the server's planner decides: one document for a lookup by
 * {@code _id}, every document of the collection otherwise (tests/compat reads it).
 */
final class IdFirstPlanner {

    private static final String ID = "_id";
    private final QueryMatcher matcher = new DefaultQueryMatcher();
    private final AtomicLong scannedObjects = new AtomicLong();

    long scannedObjects() {
        return scannedObjects.get();
    }

    void plan(MongoBackend inner, String database, String command, Document body) {
        switch (command.toLowerCase(Locale.ROOT)) {
            case "update" -> forEach(inner, database, body, "updates", "u");
            case "delete" -> forEach(inner, database, body, "deletes", null);
            case "findandmodify" -> findAndModify(inner, database, body);
            case "find", "count" -> count(inner, database, body, body.get("filter") != null
                ? (Document) body.get("filter") : (Document) body.get("query"));
            default -> {
            }
        }
    }

    @SuppressWarnings("unchecked")
    private void forEach(MongoBackend inner, String database, Document body, String key, String updateKey) {
        Object statements = body.get(key);
        if (!(statements instanceof List<?> list)) {
            return;
        }
        for (Document statement : (List<Document>) list) {
            Document filter = (Document) statement.get("q");
            boolean single = updateKey != null
                ? !isTrue(statement.get("multi")) && !isTrue(statement.get("upsert"))
                    && !statement.containsKey("arrayFilters") && !positional((Document) statement.get(updateKey))
                : statement.get("limit") instanceof Number n && n.intValue() == 1;
            if (single) {
                statement.put("q", narrow(inner, database, collectionOf(body), filter));
            } else {
                count(inner, database, body, filter);
            }
        }
    }

    private void findAndModify(MongoBackend inner, String database, Document body) {
        Document filter = (Document) body.get("query");
        Object update = body.get("update");
        boolean single = !isTrue(body.get("upsert")) && !body.containsKey("sort")
            && !body.containsKey("arrayFilters") && (!(update instanceof Document u) || !positional(u));
        if (single && filter != null) {
            body.put("query", narrow(inner, database, collectionOf(body), filter));
        } else {
            count(inner, database, body, filter);
        }
    }

    /** The filter to run instead of {@code filter}: by _id alone where that is exact. */
    private Document narrow(MongoBackend inner, String database, String collectionName, Document filter) {
        Object id = filter == null ? null : filter.get(ID);
        if (id == null || filter.size() == 1 || isOperator(id)) {
            count(inner, database, collectionName, filter);
            return filter;
        }
        scannedObjects.incrementAndGet();
        MongoCollection<?> collection = inner.resolveDatabase(database).resolveCollection(collectionName, false);
        Document current = null;
        if (collection != null) {
            for (Document document : collection.handleQuery(new Document(ID, id), 0, 1)) {
                current = document;
            }
        }
        if (current != null && matcher.matches(current, filter)) {
            return new Document(ID, id);
        }
        return new Document(ID, new Document("$in", List.of()));
    }

    private void count(MongoBackend inner, String database, Document body, Document filter) {
        count(inner, database, collectionOf(body), filter);
    }

    private void count(MongoBackend inner, String database, String collectionName, Document filter) {
        if (filter != null && filter.size() == 1 && filter.containsKey(ID)) {
            Object id = filter.get(ID);
            if (!isOperator(id)) {
                scannedObjects.incrementAndGet();
                return;
            }
            if (id instanceof Document op && op.size() == 1 && op.get("$in") instanceof List<?> ids) {
                scannedObjects.addAndGet(ids.size());
                return;
            }
        }
        MongoCollection<?> collection = inner.resolveDatabase(database).resolveCollection(collectionName, false);
        if (collection != null) {
            scannedObjects.addAndGet(collection.count());
        }
    }

    private static String collectionOf(Document body) {
        return String.valueOf(body.values().iterator().next());
    }

    private static boolean isOperator(Object value) {
        return value instanceof Document document
            && document.keySet().stream().anyMatch(k -> k.startsWith("$"));
    }

    private static boolean positional(Document update) {
        if (update == null) {
            return false;
        }
        for (Object fields : update.values()) {
            if (fields instanceof Document document) {
                for (String path : document.keySet()) {
                    if (path.contains(".$")) {
                        return true;
                    }
                }
            }
        }
        return false;
    }

    private static boolean isTrue(Object value) {
        return value instanceof Boolean b ? b : value instanceof Number n && n.intValue() != 0;
    }

    static final Set<String> PLANNED = Set.of("update", "delete", "findandmodify", "find", "count");
}
