import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;

/**
 * SET search_path and SET TIME ZONE from pgJDBC, then rounds of statements
 * through a plain Statement and a server-prepared PreparedStatement
 * (prepareThreshold=1) that depend on both, while a second connection keeps
 * one server of the pool busy every other round.
 *
 * Mode "set": 24 rounds, then a SET rolled back and 4 more rounds.
 * Mode "reset": RESET TIME ZONE and then RESET ALL, 4 rounds after each.
 * pgJDBC sends the JVM's zone (America/New_York, set by the test) as the
 * TimeZone startup parameter, which is the session's default that RESET
 * goes back to.
 *
 * Prints what the client saw, one line per statement, then "backends: N"
 * (how many server backends it ran on), which the Rust test compares apart.
 *
 * Usage: java -Duser.timezone=America/New_York -cp postgresql.jar:DIR SessionSet MODE JDBC_URL
 */
public class SessionSet {
    static final Set<Integer> pids = new TreeSet<>();

    static String one(Statement s, String sql) throws SQLException {
        try (ResultSet rs = s.executeQuery(sql)) {
            rs.next();
            return rs.getString(1);
        }
    }

    static Connection connect(String url) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", "app");
        p.setProperty("password", "app_pw");
        p.setProperty("prepareThreshold", "1");
        return DriverManager.getConnection(url, p);
    }

    /** One round of statements that show the session's settings. */
    static void round(String label, Connection c, PreparedStatement ps) throws SQLException {
        try (Statement s = c.createStatement()) {
            System.out.println(label + " show search_path: " + one(s, "show search_path"));
            System.out.println(label + " show TimeZone: " + one(s, "show TimeZone"));
            System.out.println(label + " only_here: " + one(s, "select count(*) from only_here"));
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                System.out.println(label + " prepared: " + rs.getString(1) + " | " + rs.getString(2)
                        + " | " + rs.getString(3) + " | " + rs.getString(4));
            }
            pids.add(Integer.parseInt(one(s, "select pg_backend_pid()")));
        }
    }

    static void rounds(String label, Connection c, Connection holder, PreparedStatement ps, int n)
            throws SQLException {
        for (int i = 0; i < n; i++) {
            boolean hold = i % 2 == 0;
            if (hold) {
                try (Statement s = holder.createStatement()) {
                    s.execute("select 1"); // holder is not autocommit: a transaction is open now
                }
            }
            round(label + " " + i, c, ps);
            if (hold) {
                holder.commit();
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        String url = args[1];
        try (Connection c = connect(url); Connection holder = connect(url)) {
            holder.setAutoCommit(false);
            PreparedStatement ps = c.prepareStatement(
                    "select current_setting('search_path'), current_setting('TimeZone'),"
                            + " '2024-01-01 12:00:00+00'::timestamptz::text,"
                            + " (select count(*) from only_here)::text");
            try (Statement s = c.createStatement()) {
                System.out.println("startup TimeZone: " + one(s, "show TimeZone"));
                s.execute("SET search_path TO s2, public");
                s.execute("SET TIME ZONE 'Asia/Tokyo'");
            }
            if (mode.equals("set")) {
                rounds("set", c, holder, ps, 24);

                // A SET in a transaction that rolls back does not last.
                c.setAutoCommit(false);
                try (Statement s = c.createStatement()) {
                    s.execute("SET search_path TO public");
                    s.execute("SET TIME ZONE 'UTC'");
                }
                c.rollback();
                c.setAutoCommit(true);
                rounds("after rollback", c, holder, ps, 4);
            } else if (mode.equals("reset")) {
                rounds("set", c, holder, ps, 2);
                // RESET goes back to the session's default: for TimeZone,
                // what the driver sent at startup.
                try (Statement s = c.createStatement()) {
                    s.execute("RESET TIME ZONE");
                    s.execute("SET search_path TO public, s2");
                }
                rounds("reset", c, holder, ps, 4);
                try (Statement s = c.createStatement()) {
                    s.execute("SET TIME ZONE 'Asia/Tokyo'");
                    s.execute("RESET ALL");
                }
                rounds("reset all", c, holder, ps, 4);
            } else {
                throw new IllegalArgumentException("mode: set or reset, not " + mode);
            }
            ps.close();
        }
        System.out.println("backends: " + pids.size());
    }
}
