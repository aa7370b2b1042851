package holdspace.embeddedmongo;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

/**
 * Holdspace's embedded MongoDB: mongo-java-server on loopback, in memory (tests) or
 * in memory and kept in a journal file (the run command).
 *
 * <pre>
 * java -Xmx512m -jar holdspace-embedded-mongo.jar --store memory|FILE [--host H] [--port P] [--port-file F]
 * </pre>
 *
 * Three things differ from stock mongo-java-server 1.47, each pinned by a test:
 * <ul>
 * <li>It declares MongoDB 6.0 (wire version 17): stock says 5.0 (wire 8), which
 * PyMongo 4.20 refuses. What the server really supports is pinned by tests/compat.</li>
 * <li>Every reply is a snapshot ({@link ConsistentBackend}): stock replies carry live
 * documents that a concurrent write could change while they are being encoded.</li>
 * <li>The durable store is a journal of the commands applied, written before each
 * reply ({@link Journal}): stock's H2 store committed once a second (a killed server
 * lost acknowledged writes) and serialized documents with Java serialization.</li>
 * </ul>
 */
public final class EmbeddedMongo {

    /** What the server says it is, to drivers (hello/isMaster and buildInfo). */
    static final MongoVersion DECLARED = new MongoVersion() {
        @Override
        public List<Integer> getVersionArray() {
            return List.of(6, 0, 0);
        }

        @Override
        public int getWireVersion() {
            return 17;
        }
    };

    private EmbeddedMongo() {
    }

    public static void main(String[] args) throws IOException {
        // Before the first logger exists: a line per connection is noise here.
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel",
            System.getProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn"));
        // Its only warning is a line per secondary index asked for (every service asks at
        // each start): said once below instead. tests/compat pins the behaviour.
        System.setProperty(
            "org.slf4j.simpleLogger.log.de.bwaldvogel.mongo.backend.AbstractMongoDatabase",
            "error");
        Options options = Options.parse(args);
        Journal journal = options.inMemory()
            ? null
            : new Journal(prepared(options.store), options.compactMb * 1024L * 1024L);
        ConsistentBackend backend = new ConsistentBackend(new MemoryBackend(), journal);
        backend.version(DECLARED);
        long replayed = backend.recover();
        if (journal != null) {
            System.out.printf("holdspace-embedded-mongo: %d commands replayed from %s%n",
                replayed, options.store);
        }
        MongoServer server = new MongoServer(backend);
        server.bind(options.host, options.port);
        InetSocketAddress bound = server.getLocalAddress();
        Runtime.getRuntime().addShutdownHook(new Thread(server::shutdownNow, "shutdown"));
        if (options.portFile != null) {
            // Written whole, then moved into place: a reader never sees half a number.
            Path tmp = Path.of(options.portFile + ".tmp");
            Files.writeString(tmp, Integer.toString(bound.getPort()), StandardCharsets.UTF_8);
            Files.move(tmp, Path.of(options.portFile), StandardCopyOption.ATOMIC_MOVE);
        }
        System.out.println("holdspace-embedded-mongo: secondary indexes are accepted but not"
            + " built; a filter on fields other than _id reads the whole collection");
        System.out.printf("holdspace-embedded-mongo listening on %s:%d, store %s%n",
            bound.getHostString(), bound.getPort(), options.inMemory() ? "memory" : options.store);
        System.out.flush();
    }

    static Path prepared(String file) throws IOException {
        Path path = Path.of(file).toAbsolutePath();
        Files.createDirectories(path.getParent());
        return path;
    }

    record Options(String host, int port, String store, String portFile, long compactMb) {
        boolean inMemory() {
            return store.equals("memory");
        }

        static Options parse(String[] args) {
            String host = "127.0.0.1";
            int port = 27017;
            String store = null;
            String portFile = null;
            long compactMb = 64;
            for (int i = 0; i < args.length; i++) {
                String value = i + 1 < args.length ? args[i + 1] : null;
                switch (args[i]) {
                    case "--host" -> host = require(args[i], value);
                    case "--port" -> port = Integer.parseInt(require(args[i], value));
                    case "--store" -> store = require(args[i], value);
                    case "--port-file" -> portFile = require(args[i], value);
                    case "--compact-mb" -> compactMb = Long.parseLong(require(args[i], value));
                    default -> usage("unknown argument " + args[i]);
                }
                i++;
            }
            if (store == null) {
                usage("--store is required: memory, or the path of the journal to keep data in");
            }
            return new Options(host, port, store, portFile, compactMb);
        }

        private static String require(String flag, String value) {
            if (value == null) {
                usage(flag + " needs a value");
            }
            return value;
        }

        private static void usage(String problem) {
            System.err.println("holdspace-embedded-mongo: " + problem);
            System.err.println("usage: --store memory|FILE [--host 127.0.0.1]"
                + " [--port 27017 (0: any free port)] [--port-file F] [--compact-mb 64]");
            System.exit(2);
        }
    }
}
