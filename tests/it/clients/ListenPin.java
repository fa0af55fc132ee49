import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.PGStatement;

/**
 * Session features from pgJDBC that a transaction-mode pool must serve
 * without a server of their own (LISTEN/NOTIFY) or by keeping one (a
 * session advisory lock, a temporary table). A third connection, "holder",
 * keeps one server of the pool busy in a transaction at times (autocommit
 * off: its "select 1" opens a transaction, commit() ends it), so through a
 * pool of 2 the other connections share and change servers.
 *
 * Mode "listen": connection L (default settings: LISTEN goes through the
 * extended protocol, as every pgJDBC statement) LISTENs on jch; S sends 30
 * notifications, NOTIFY and a PreparedStatement with pg_notify (server-
 * prepared after 5 uses by default) in turn, while L also runs statements;
 * L waits for them with getNotifications(500) and prints them in order;
 * after UNLISTEN nothing more arrives. Then LISTEN/UNLISTEN inside
 * transactions (autocommit off): rolled back they do nothing, committed
 * they take effect at COMMIT. Ends with "backends: L S".
 *
 * Mode "pin": A (prepareThreshold=1) takes session advisory lock 77; over
 * 20 rounds B's pg_try_advisory_lock(77) fails; A unlocks and B gets it.
 * Then a temporary table on A used by server-prepared statements over 20
 * rounds, then dropped, then rounds where nothing pins A any more. Prints
 * whether A stayed on one backend while it held the lock and while it had
 * the table (always so directly; through the pool only if it was pinned).
 * Ends with "backends: A B": the backends A ran on once nothing pinned it,
 * and B throughout.
 *
 * Prints what the connections saw, one line per step, then the "backends:"
 * line (how many server backends each counted connection ran on), which
 * the Rust test compares apart.
 *
 * Usage: java -cp postgresql.jar:DIR ListenPin MODE JDBC_URL
 */
public class ListenPin {
    static Connection connect(String url, String prepareThreshold) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", "app");
        p.setProperty("password", "app_pw");
        if (prepareThreshold != null) {
            p.setProperty("prepareThreshold", prepareThreshold);
        }
        return DriverManager.getConnection(url, p);
    }

    static void exec(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement()) {
            s.execute(sql);
        }
    }

    static String one(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            rs.next();
            return rs.getString(1);
        }
    }

    static boolean flag(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            rs.next();
            return rs.getBoolean(1);
        }
    }

    static int pid(Connection c) throws SQLException {
        return Integer.parseInt(one(c, "select pg_backend_pid()"));
    }

    /** Opens a transaction on the holder (autocommit off): one server is busy until commit. */
    static void hold(Connection holder) throws SQLException {
        exec(holder, "select 1");
    }

    /**
     * Notifications for L: waits until `want` have come (or 20 s passed),
     * then `settleMillis` more for any beyond them. Each as "channel
     * payload"; a notification without the sending backend's pid says so.
     */
    static List<String> heard(Connection l, int want, int settleMillis) throws SQLException {
        PGConnection pg = l.unwrap(PGConnection.class);
        List<String> got = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 20_000;
        while (got.size() < want && System.currentTimeMillis() < deadline) {
            add(got, pg.getNotifications(500));
        }
        add(got, pg.getNotifications(settleMillis));
        return got;
    }

    static void add(List<String> got, PGNotification[] notes) {
        if (notes == null) {
            return;
        }
        for (PGNotification n : notes) {
            got.add(n.getName() + " " + n.getParameter() + (n.getPID() > 0 ? "" : " (pid " + n.getPID() + ")"));
        }
    }

    static void print(String label, List<String> got) {
        for (int i = 0; i < got.size(); i++) {
            System.out.println(label + " " + i + ": " + got.get(i));
        }
        System.out.println(label + ": " + got.size() + " heard");
    }

    static void listen(String url) throws SQLException {
        Set<Integer> lPids = new TreeSet<>();
        Set<Integer> sPids = new TreeSet<>();
        try (Connection l = connect(url, null);
                Connection s = connect(url, null);
                Connection holder = connect(url, null)) {
            holder.setAutoCommit(false);
            exec(l, "LISTEN jch");
            try (PreparedStatement notify = s.prepareStatement("select pg_notify('jch', ?)")) {
                for (int i = 0; i < 30; i++) {
                    boolean busy = i % 3 == 0;
                    if (busy) {
                        hold(holder);
                    }
                    if (i % 2 == 0) {
                        exec(s, "NOTIFY jch, 'p" + i + "'");
                    } else {
                        notify.setString(1, "p" + i);
                        try (ResultSet rs = notify.executeQuery()) {
                            rs.next();
                        }
                    }
                    sPids.add(pid(s));
                    // The listener runs statements too, while notifications come.
                    lPids.add(pid(l));
                    if (busy) {
                        holder.commit();
                    }
                }
                System.out.println("pg_notify server-prepared: "
                        + notify.unwrap(PGStatement.class).isUseServerPrepare());
            }
            print("jch", heard(l, 30, 500));

            exec(l, "UNLISTEN jch");
            exec(s, "NOTIFY jch, 'after UNLISTEN'");
            print("after UNLISTEN jch", heard(l, 0, 1000));

            // In a transaction block LISTEN and UNLISTEN take effect at
            // COMMIT, and not at all when it rolls back. The first LISTEN
            // and the UNLISTEN open their transactions: pgJDBC sends BEGIN
            // with them, in one batch (one Sync); the second LISTEN
            // follows a select 1.
            l.setAutoCommit(false);
            exec(l, "LISTEN jtx");
            l.rollback();
            exec(s, "NOTIFY jtx, 'after rolled-back LISTEN'");
            exec(l, "select 1");
            exec(l, "LISTEN jtx");
            exec(s, "NOTIFY jtx, 'before COMMIT'");
            l.commit();
            exec(s, "NOTIFY jtx, 'after COMMIT'");
            exec(l, "UNLISTEN jtx");
            l.rollback();
            exec(s, "NOTIFY jtx, 'after rolled-back UNLISTEN'");
            l.setAutoCommit(true);
            print("jtx", heard(l, 2, 1000));

            exec(l, "UNLISTEN *");
            exec(s, "NOTIFY jtx, 'after UNLISTEN *'");
            print("after UNLISTEN *", heard(l, 0, 1000));
        }
        System.out.println("backends: " + lPids.size() + " " + sPids.size());
    }

    /** B tries lock 77; if it got it, it lets it go again. */
    static boolean tryLock(Connection b, PreparedStatement tryLock, Set<Integer> bPids) throws SQLException {
        boolean got;
        try (ResultSet rs = tryLock.executeQuery()) {
            rs.next();
            got = rs.getBoolean(1);
        }
        if (got) {
            exec(b, "select pg_advisory_unlock(77)");
        }
        bPids.add(pid(b));
        return got;
    }

    static void pin(String url) throws SQLException {
        Set<Integer> aUnpinnedPids = new TreeSet<>();
        Set<Integer> bPids = new TreeSet<>();
        try (Connection a = connect(url, "1");
                Connection b = connect(url, null);
                Connection holder = connect(url, null);
                PreparedStatement tryLock = b.prepareStatement("select pg_try_advisory_lock(?)")) {
            holder.setAutoCommit(false);
            tryLock.setLong(1, 77);

            exec(a, "select pg_advisory_lock(77)");
            System.out.println("A locked 77");
            Set<Integer> lockPids = new TreeSet<>();
            for (int i = 0; i < 20; i++) {
                // While the holder has a server, A finds its own, or the other.
                boolean busy = i % 2 == 0;
                if (busy) {
                    hold(holder);
                }
                lockPids.add(pid(a));
                if (busy) {
                    // Not while B runs: with A pinned to one server, B
                    // needs the other.
                    holder.commit();
                }
                System.out.println("lock round " + i + ": 77 free to B: " + tryLock(b, tryLock, bPids));
            }
            System.out.println("same backend while locked: " + (lockPids.size() == 1));
            System.out.println("A unlocks 77: " + flag(a, "select pg_advisory_unlock(77)"));
            System.out.println("77 free to B after unlock: " + tryLock(b, tryLock, bPids));

            exec(a, "create temp table jt(x int)");
            Set<Integer> tablePids = new TreeSet<>();
            try (PreparedStatement insert = a.prepareStatement("insert into jt values (?)");
                    PreparedStatement count = a.prepareStatement("select count(*), sum(x) from jt")) {
                for (int i = 0; i < 20; i++) {
                    boolean busy = i % 2 == 0;
                    if (busy) {
                        hold(holder);
                    }
                    insert.setInt(1, i);
                    int inserted = insert.executeUpdate();
                    String seen;
                    try (ResultSet rs = count.executeQuery()) {
                        rs.next();
                        seen = rs.getString(1) + " rows, sum " + rs.getString(2);
                    }
                    tablePids.add(pid(a));
                    if (busy) {
                        holder.commit();
                    }
                    boolean serverPrepared = insert.unwrap(PGStatement.class).isUseServerPrepare()
                            && count.unwrap(PGStatement.class).isUseServerPrepare();
                    System.out.println("temp round " + i + ": inserted " + inserted + ", jt has " + seen
                            + (serverPrepared ? " (server-prepared)" : " (NOT server-prepared)"));
                }
            }
            System.out.println("same backend while jt exists: " + (tablePids.size() == 1));
            exec(a, "drop table jt");
            System.out.println("jt after drop: " + one(a, "select count(*) from pg_class where relname = 'jt'"));

            // Nothing holds A to a server any more.
            for (int i = 0; i < 8; i++) {
                boolean busy = i % 2 == 0;
                if (busy) {
                    hold(holder);
                }
                aUnpinnedPids.add(pid(a));
                boolean free = tryLock(b, tryLock, bPids);
                if (busy) {
                    holder.commit();
                }
                System.out.println("free round " + i + ": 77 free to B: " + free);
            }
        }
        System.out.println("backends: " + aUnpinnedPids.size() + " " + bPids.size());
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        String url = args[1];
        if (mode.equals("listen")) {
            listen(url);
        } else if (mode.equals("pin")) {
            pin(url);
        } else {
            throw new IllegalArgumentException("mode: listen or pin, not " + mode);
        }
    }
}
