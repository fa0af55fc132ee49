import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.postgresql.PGStatement;

/**
 * pgJDBC's reads right after its own writes, for pgmlcat's read-your-writes
 * routing. A writer connection inserts N ids in turn with a prepared INSERT,
 * every other one in a transaction of its own (setAutoCommit(false) ...
 * commit(): pgJDBC sends its BEGIN in one batch with the INSERT, COMMIT on
 * its own), and reads each id back at once, in autocommit mode, with a
 * prepared SELECT that also says whether a replica answered. With
 * prepareThreshold=1 in the URL each statement is server-prepared (named)
 * from its first execution, its Parse in one batch with its Bind and
 * Execute; under pgJDBC's default of 5 the first four executions are
 * unnamed Parse/Bind/Execute batches. A bystander connection that never
 * writes reads pg_is_in_recovery() after every 4th pair, while the writer's
 * commits are still unreplayed on lagging replicas.
 *
 * A write whose commit the router missed would hide behind the writer's
 * previous, still unreplayed one (its reads wait for that one too), so
 * twice every 20 pairs, once before an autocommit write and once before a
 * transaction, the writer first waits until its reads go back to a
 * replica: nothing of its own left to wait for, the next read is fresh
 * only if that very write was noticed.
 *
 * Prints one line, "stale=S writer_on_replica=W bystander_on_primary=P
 * bystander_reads=R stale_ids=I": reads that missed the row just written,
 * the writer's reads a replica answered, the bystander's reads the primary
 * answered, how many the bystander made, and the ids read stale ("tx" after
 * those written in a transaction). Any driver error ends it non-zero.
 *
 * Usage: java ReadYourWrites N FIRST_ID JDBC_URL [READ_JDBC_URL]
 * With READ_JDBC_URL the writer's reads go through a second connection to
 * it, and the bystander connects there too: directly, writes on the primary
 * and reads on a replica, which shows what staleness looks like.
 */
public class ReadYourWrites {
    static final String INSERT = "insert into t values (?)";
    static final String READ = "select count(*), pg_is_in_recovery() from t where id = ?";
    static final String LOOK = "select pg_is_in_recovery()";
    /** How long the writer's reads may take to go back to a replica. */
    static final long SETTLE_NANOS = 5_000_000_000L;

    static Connection connect(String url) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", "app");
        p.setProperty("password", "app_pw");
        return DriverManager.getConnection(url, p);
    }

    /** Fails unless pgJDBC runs `ps` as a named server-side statement. */
    static void serverPrepared(PreparedStatement ps, String what) throws SQLException {
        if (!ps.unwrap(PGStatement.class).isUseServerPrepare()) {
            throw new IllegalStateException(
                    what + " was never server-prepared: prepareThreshold 0 in the URL?");
        }
    }

    /** Reads `id` back: {rows found, 1 if a replica answered}. */
    static long[] readBack(PreparedStatement read, int id) throws SQLException {
        read.setInt(1, id);
        try (ResultSet rs = read.executeQuery()) {
            if (!rs.next()) {
                throw new IllegalStateException("no row reading back " + id);
            }
            return new long[] {rs.getLong(1), rs.getBoolean(2) ? 1 : 0};
        }
    }

    /** Waits until a replica answers the writer's reads again. */
    static void settle(PreparedStatement read, int lastId) throws Exception {
        long deadline = System.nanoTime() + SETTLE_NANOS;
        while (readBack(read, lastId)[1] == 0) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException(
                        "the writer's reads never went back to a replica after id " + lastId);
            }
            Thread.sleep(20);
        }
    }

    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        int first = Integer.parseInt(args[1]);
        String url = args[2];
        boolean separateReads = args.length > 3;
        String readUrl = separateReads ? args[3] : url;
        int stale = 0, writerOnReplica = 0, bystanderOnPrimary = 0, bystanderReads = 0;
        List<String> staleIds = new ArrayList<>();
        // A null resource is skipped by try-with-resources.
        try (Connection writer = connect(url);
                Connection separateReader = separateReads ? connect(readUrl) : null;
                Connection bystander = connect(readUrl)) {
            Connection reader = separateReads ? separateReader : writer;
            try (PreparedStatement insert = writer.prepareStatement(INSERT);
                    PreparedStatement read = reader.prepareStatement(READ);
                    PreparedStatement look = bystander.prepareStatement(LOOK)) {
                for (int i = 0; i < n; i++) {
                    int id = first + i;
                    boolean inTx = i % 2 == 1;
                    if (i % 20 == 0 || i % 20 == 11) {
                        settle(read, id - 1);
                    }
                    if (inTx) {
                        writer.setAutoCommit(false);
                    }
                    insert.setInt(1, id);
                    int inserted = insert.executeUpdate();
                    if (inserted != 1) {
                        throw new IllegalStateException("insert of " + id + " inserted " + inserted + " rows");
                    }
                    if (inTx) {
                        writer.commit();
                        writer.setAutoCommit(true);
                    }
                    long[] seen = readBack(read, id);
                    if (seen[0] == 0) {
                        stale++;
                        staleIds.add(id + (inTx ? "tx" : ""));
                    }
                    writerOnReplica += (int) seen[1];
                    if (i % 4 == 3) {
                        try (ResultSet rs = look.executeQuery()) {
                            if (!rs.next()) {
                                throw new IllegalStateException("no row from the bystander's read");
                            }
                            bystanderOnPrimary += rs.getBoolean(1) ? 0 : 1;
                            bystanderReads++;
                        }
                    }
                }
                serverPrepared(insert, INSERT);
                serverPrepared(read, READ);
                serverPrepared(look, LOOK);
            }
        }
        System.out.println("stale=" + stale + " writer_on_replica=" + writerOnReplica
                + " bystander_on_primary=" + bystanderOnPrimary + " bystander_reads=" + bystanderReads
                + " stale_ids=" + String.join(",", staleIds));
    }
}
