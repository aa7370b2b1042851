package holdspace.embeddedmongo;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BiConsumer;
import java.util.zip.CRC32C;

import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.wire.bson.BsonDecoder;
import de.bwaldvogel.mongo.wire.bson.BsonEncoder;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;

/**
 * The durable store of the run command: every command that changed the in-memory
 * database, in the order it was applied, appended to one file before its reply.
 *
 * <p>Why not mongo-java-server's H2 store: it stores documents and compares index keys
 * through Java serialization (measured: 210 compare-and-set writes a second against
 * 1,500 in memory, and 0.5 s of server CPU per enrollment), and its commits had to be
 * added by us anyway. The in-memory backend is deterministic, so applying the same
 * commands to an empty one in the same order rebuilds the same data: a write-ahead log.
 *
 * <p>A record is {@code [length][CRC-32C][BSON {db, command}]}. Appends go to the
 * operating system before the reply is sent, so a killed server loses nothing it
 * acknowledged (no fsync: a power cut may lose the last writes). At start the log is
 * replayed up to the first incomplete or damaged record (a write that was never
 * acknowledged), then rewritten as a snapshot: each collection's indexes and its
 * documents, as commands. It is rewritten again whenever it grows past its limit
 * (64 MB) and twice the last snapshot.
 */
final class Journal implements AutoCloseable {

    private static final int HEADER = 8;

    private final Path path;
    private final long compactAbove;
    private long snapshotBytes;
    private FileChannel channel;
    private FileChannel lockFile;

    Journal(Path path, long compactAbove) {
        this.path = path;
        this.compactAbove = compactAbove;
    }

    /** Takes the journal for this process: a second server on it would interleave writes. */
    void lock() throws IOException {
        lockFile = FileChannel.open(path.resolveSibling(path.getFileName() + ".lock"),
            StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        if (lockFile.tryLock() == null) {
            throw new IOException("The file is locked: " + path + " (another server uses it)");
        }
    }

    /** Applies every intact record to {@code apply}, in order; returns how many. */
    long replay(BiConsumer<String, Document> apply) throws IOException {
        if (!Files.exists(path)) {
            return 0;
        }
        long applied = 0;
        try (FileChannel in = FileChannel.open(path, StandardOpenOption.READ)) {
            ByteBuffer header = ByteBuffer.allocate(HEADER);
            long size = in.size();
            long position = 0;
            while (position + HEADER <= size) {
                header.clear();
                readFully(in, header, position);
                int length = header.getInt(0);
                int crc = header.getInt(4);
                if (length <= 0 || position + HEADER + length > size) {
                    break; // the tail of a write that was never acknowledged
                }
                ByteBuffer body = ByteBuffer.allocate(length);
                readFully(in, body, position + HEADER);
                if (crc(body.array()) != crc) {
                    break;
                }
                Document record = BsonDecoder.decodeBson(Unpooled.wrappedBuffer(body.array()));
                apply.accept((String) record.get("db"), (Document) record.get("command"));
                applied++;
                position += HEADER + length;
            }
        }
        return applied;
    }

    /** Opens the log for appending, starting from {@code snapshot} (commands, in order). */
    void rewrite(List<Record> snapshot) throws IOException {
        Path fresh = path.resolveSibling(path.getFileName() + ".new");
        try (FileChannel out = FileChannel.open(fresh, StandardOpenOption.CREATE,
            StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE)) {
            for (Record record : snapshot) {
                write(out, record.database(), record.command());
            }
            out.force(true);
            snapshotBytes = out.size();
        }
        close();
        Files.move(fresh, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        channel = FileChannel.open(path, StandardOpenOption.WRITE, StandardOpenOption.APPEND);
    }

    void append(String database, Document command) throws IOException {
        write(channel, database, command);
    }

    /** Past its limit, and at least twice its last snapshot: rewriting stays a small share. */
    boolean wantsCompaction() throws IOException {
        return channel.size() > Math.max(compactAbove, 2 * snapshotBytes);
    }

    private static void write(FileChannel out, String database, Document command) throws IOException {
        ByteBuf encoded = Unpooled.buffer();
        try {
            BsonEncoder.encodeDocument(new Document("db", database).append("command", command), encoded);
            byte[] body = new byte[encoded.readableBytes()];
            encoded.readBytes(body);
            ByteBuffer record = ByteBuffer.allocate(HEADER + body.length);
            record.putInt(body.length).putInt(crc(body)).put(body).flip();
            while (record.hasRemaining()) {
                out.write(record);
            }
        } finally {
            encoded.release();
        }
    }

    private static int crc(byte[] bytes) {
        CRC32C crc = new CRC32C();
        crc.update(bytes);
        return (int) crc.getValue();
    }

    private static void readFully(FileChannel in, ByteBuffer into, long position) throws IOException {
        while (into.hasRemaining()) {
            if (in.read(into, position + into.position()) < 0) {
                throw new IOException("unexpected end of " + in);
            }
        }
    }

    @Override
    public void close() throws IOException {
        if (channel != null) {
            channel.close();
            channel = null;
        }
    }

    record Record(String database, Document command) {
    }

    static List<Record> batches(String database, String collection, Iterable<Document> documents) {
        List<Record> out = new ArrayList<>();
        List<Document> batch = new ArrayList<>();
        for (Document document : documents) {
            batch.add(document);
            if (batch.size() == 500) {
                out.add(new Record(database, new Document("insert", collection).append("documents", batch)));
                batch = new ArrayList<>();
            }
        }
        if (!batch.isEmpty()) {
            out.add(new Record(database, new Document("insert", collection).append("documents", batch)));
        }
        return out;
    }
}
