package holdspace.embeddedmongo;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.List;

import org.h2.mvstore.MVStore;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.MongoVersion;
import de.bwaldvogel.mongo.backend.h2.H2Backend;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;

/**
 * Holdspace's embedded MongoDB: mongo-java-server on loopback, in memory (tests) or
 * in an H2 MVStore file (the run command).
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
 * <li>The file store commits every change before the reply leaves
 * ({@link ConsistentBackend}): stock leaves commits to MVStore's background writer
 * (once a second), so a killed server lost acknowledged writes.</li>
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
        Options options = Options.parse(args);
        ConsistentBackend backend = options.inMemory()
            ? new ConsistentBackend(new MemoryBackend(), null)
            : onDisk(options.store);
        backend.version(DECLARED);
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
        System.out.printf("holdspace-embedded-mongo listening on %s:%d, store %s%n",
            bound.getHostString(), bound.getPort(), options.inMemory() ? "memory" : options.store);
        System.out.flush();
    }

    static ConsistentBackend onDisk(String file) throws IOException {
        Path path = Path.of(file).toAbsolutePath();
        Files.createDirectories(path.getParent());
        MVStore store = new MVStore.Builder().fileName(path.toString()).open();
        // A commit per change makes a chunk per change. MVStore keeps chunks it no longer
        // needs for 45 s by default, in case the disk reorders writes on power loss;
        // that grew the file by ~25 kB per write (90 MB in 4,000). What we promise is
        // survival of the process's death (the kernel has every committed write), so
        // free space is reused at once.
        store.setRetentionTime(0);
        return new ConsistentBackend(new H2Backend(store), store);
    }

    record Options(String host, int port, String store, String portFile) {
        boolean inMemory() {
            return store.equals("memory");
        }

        static Options parse(String[] args) {
            String host = "127.0.0.1";
            int port = 27017;
            String store = null;
            String portFile = null;
            for (int i = 0; i < args.length; i++) {
                String value = i + 1 < args.length ? args[i + 1] : null;
                switch (args[i]) {
                    case "--host" -> host = require(args[i], value);
                    case "--port" -> port = Integer.parseInt(require(args[i], value));
                    case "--store" -> store = require(args[i], value);
                    case "--port-file" -> portFile = require(args[i], value);
                    default -> usage("unknown argument " + args[i]);
                }
                i++;
            }
            if (store == null) {
                usage("--store is required: memory, or the path of the H2 file to keep data in");
            }
            return new Options(host, port, store, portFile);
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
                + " [--port 27017 (0: any free port)] [--port-file F]");
            System.exit(2);
        }
    }
}
