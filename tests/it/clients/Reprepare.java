import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;

import org.postgresql.PGStatement;

/**
 * A server-prepared pgJDBC statement whose result type DDL changes: the
 * next execution gets 0A000 "cached plan must not change result type", and
 * pgJDBC prepares the text again and runs it once more, transparently in
 * autocommit mode (and inside a transaction with autosave=conservative,
 * which rolls back to its savepoint first). prepareThreshold=1 makes the
 * first execution server-prepared, as every statement is after 5 uses by
 * default. A second connection keeps one server of the pool busy every
 * other round, so through a pool of 2 the statement lives on both servers.
 *
 * Prints the rows each execution saw, one line each, then
 * "backends: N M" (how many server backends each of the two connections
 * under test ran on), which the Rust test compares apart.
 *
 * Usage: java -cp postgresql.jar:DIR Reprepare JDBC_URL
 */
public class Reprepare {
    static final String Q = "select * from t order by a";
    /** Server backends each connection ran on. */
    static final Map<Connection, Set<Integer>> pids = new LinkedHashMap<>();

    static String rows(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            List<String> row = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                row.add(md.getColumnName(i) + "=" + rs.getString(i));
            }
            out.add("(" + String.join(", ", row) + ")");
        }
        return String.join(" ", out);
    }

    static void exec(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.execute(sql);
        }
    }

    static void pid(Connection c) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("select pg_backend_pid()")) {
            rs.next();
            pids.computeIfAbsent(c, k -> new TreeSet<>()).add(rs.getInt(1));
        }
    }

    static Connection connect(String url, boolean autosave) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", "app");
        p.setProperty("password", "app_pw");
        p.setProperty("prepareThreshold", "1");
        if (autosave) {
            p.setProperty("autosave", "conservative");
        }
        return DriverManager.getConnection(url, p);
    }

    /** Runs ps `n` times (each in a transaction of its own when `inTx`). */
    static void rounds(String label, Connection c, Connection holder, PreparedStatement ps, int n, boolean inTx)
            throws SQLException {
        for (int i = 0; i < n; i++) {
            boolean hold = i % 2 == 0;
            if (hold) {
                exec(holder, "select 1"); // holder is not autocommit: a transaction is open now
            }
            String seen;
            try (ResultSet rs = ps.executeQuery()) {
                seen = rows(rs);
            } catch (SQLException e) {
                seen = "error " + e.getSQLState() + " " + e.getMessage();
                if (inTx) {
                    c.rollback();
                }
            }
            if (inTx) {
                // A second execution in the same transaction.
                try (ResultSet rs = ps.executeQuery()) {
                    seen += " | " + rows(rs);
                } catch (SQLException e) {
                    seen += " | error " + e.getSQLState() + " " + e.getMessage();
                    c.rollback();
                }
                pid(c);
                c.commit();
            } else {
                pid(c);
            }
            if (hold) {
                holder.commit();
            }
            boolean serverPrepared = ps.unwrap(PGStatement.class).isUseServerPrepare();
            System.out.println(label + " " + i + (serverPrepared ? " server-prepared: " : " NOT server-prepared: ") + seen);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        try (Connection c = connect(url, false);
                Connection tx = connect(url, true);
                Connection holder = connect(url, false)) {
            holder.setAutoCommit(false);
            exec(c, "drop table if exists t");
            exec(c, "create table t(a int)");
            exec(c, "insert into t values (1), (2)");

            // Autocommit: pgJDBC re-prepares and retries on its own.
            PreparedStatement ps = c.prepareStatement(Q);
            rounds("auto", c, holder, ps, 6, false);
            exec(c, "alter table t add column b int default 5");
            rounds("auto-after-ddl", c, holder, ps, 6, false);

            // Inside transactions, on a connection with autosave=conservative.
            tx.setAutoCommit(false);
            PreparedStatement txps = tx.prepareStatement(Q);
            rounds("tx", tx, holder, txps, 4, true);
            exec(tx, "alter table t add column c int default 6");
            tx.commit();
            rounds("tx-after-ddl", tx, holder, txps, 4, true);

            // The autocommit connection's statement meets the second change too.
            rounds("auto-after-2nd-ddl", c, holder, ps, 4, false);

            // Without autosave, inside a transaction the error reaches the
            // application, which rolls back; the driver prepares the text
            // again on the next execution.
            c.setAutoCommit(false);
            exec(c, "alter table t add column d int default 7");
            c.commit();
            rounds("no-autosave-tx-after-ddl", c, holder, ps, 4, true);
            ps.close();
            txps.close();
        }
        List<String> counts = new ArrayList<>();
        for (Set<Integer> s : pids.values()) {
            counts.add(Integer.toString(s.size()));
        }
        System.out.println("backends: " + String.join(" ", counts));
    }
}
